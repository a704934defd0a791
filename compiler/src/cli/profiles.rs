//! `aegisc profiles [NAME[@VERSION]]`: the built-in profiles a policy can extend.
//!
//! Input: nothing (list every profile: name, versions, what it is for), or one reference
//! (print that profile's text, exactly what `extends` composes). Output: text, or JSON with
//! `--format json`. An unknown reference is invalid input (exit 2) with the same diagnostic
//! as an `extends` entry (did-you-mean included).

use std::fmt::Write as _;

use super::{Exit, Format, print_json};
use crate::profiles::{self, PREFIX, PROFILES};

pub fn run(reference: Option<&str>, format: Format) -> Exit {
    let Some(reference) = reference else {
        return list(format);
    };
    let entry = if reference.starts_with(PREFIX) { reference.to_string() } else { format!("{PREFIX}{reference}") };
    let found = profiles::parse(&entry).unwrap_or(Err(profiles::Unknown::Name { suggestion: None })).and_then(|r| profiles::find(&r));
    match found {
        Ok(p) => {
            match format {
                Format::Human => print!("{}", p.text),
                Format::Json => print_json(&serde_json::json!({
                    "reference": p.reference(), "name": p.name, "version": p.version, "summary": p.summary(), "text": p.text,
                })),
            }
            Exit::Ok
        }
        Err(why) => {
            let d = crate::compose::unknown_profile(&entry, why);
            let sources = crate::source::SourceMap::default();
            match format {
                Format::Human => super::eprint_diagnostics(std::slice::from_ref(&d), &sources),
                Format::Json => print_json(&super::diagnostics_json(std::slice::from_ref(&d), &sources)),
            }
            Exit::Invalid
        }
    }
}

fn list(format: Format) -> Exit {
    let newest: Vec<&profiles::Profile> =
        profiles::names().filter_map(|n| profiles::find(&profiles::Reference { name: n, version: None }).ok()).collect();
    match format {
        Format::Human => {
            let mut o = String::new();
            let width = newest.iter().map(|p| p.reference().len()).max().unwrap_or(0);
            for p in &newest {
                let _ = writeln!(o, "{:width$}  {}", p.reference(), p.summary());
            }
            let _ = writeln!(o, "\nExtend one in a policy: extends = [\"aegis:NAME@VERSION\"]; `aegis profiles NAME` prints it.");
            print!("{o}");
        }
        Format::Json => {
            let v: Vec<serde_json::Value> = newest
                .iter()
                .map(|p| {
                    let versions: Vec<u32> = PROFILES.iter().filter(|q| q.name == p.name).map(|q| q.version).collect();
                    serde_json::json!({ "name": p.name, "newest": p.reference(), "versions": versions, "summary": p.summary() })
                })
                .collect();
            print_json(&serde_json::Value::Array(v));
        }
    }
    Exit::Ok
}
