//! `aegisc check POLICY [--param N=V] QUERY...`: one ALLOW/DENY answer from the reference
//! evaluator, with the deciding rule and where it is written. Exit 0 allowed, 1 denied.
//! `--exe PATH` asks for one program: grants that name programs apply only to them.
//! Filesystem questions are answered for this host (`eval::host`): paths are resolved here as
//! the kernel will resolve them, and the notes say so.

use std::path::Path;

use super::{Exit, Format, compile_or_report, print_json};
use crate::eval::{self, Params, QueryError, Verdict};

pub use aegis_policy::query::{USAGE, parse_query};

pub fn run(policy_path: &Path, params: &[String], exe: Option<&str>, words: &[String], format: Format) -> Exit {
    let compiled = match compile_or_report(policy_path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let query_error = |e: QueryError| {
        eprintln!("error: {e}");
        Exit::Invalid
    };
    let mut values = Params::new();
    for p in params {
        match eval::parse_param(p) {
            Ok((k, v)) => {
                values.insert(k, v);
            }
            Err(e) => return query_error(e),
        }
    }
    let query = match parse_query(words) {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    if let Some(e) = exe
        && !e.starts_with('/')
    {
        return query_error(QueryError(format!("--exe `{e}`: give the program's absolute path")));
    }
    // As the kernel of this host will answer: paths resolved here (symlinks followed).
    let decision = match eval::host::evaluate_on_host(&compiled.policy, &values, &query, exe) {
        Ok(d) => d,
        Err(e) => return query_error(e),
    };
    let location = decision.rule.as_ref().and_then(|r| r.origin).map(|o| compiled.sources.locate(o));
    match format {
        Format::Human => {
            let at = match (&location, &decision.rule) {
                (Some(l), _) => format!(" ({l})"),
                (None, Some(_)) => " (built-in rule)".to_string(),
                (None, None) => String::new(),
            };
            println!("{}: {}{at}", decision.verdict, decision.reason);
            for n in &decision.notes {
                println!("  note: {n}");
            }
        }
        Format::Json => print_json(&serde_json::json!({
            "verdict": decision.verdict,
            "reason": decision.reason,
            "rule": decision.rule.as_ref().map(|r| serde_json::json!({
                "kind": r.kind,
                "text": r.text,
                "location": location.as_ref().map(ToString::to_string),
            })),
            "notes": decision.notes,
        })),
    }
    match decision.verdict {
        Verdict::Allow => Exit::Ok,
        Verdict::Deny => Exit::Denied,
    }
}
