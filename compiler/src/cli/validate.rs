//! `aegisc validate POLICY...`: parse, compose, lower and lint; report every problem.

use std::path::PathBuf;

use super::{Exit, Format, diagnostics_json, eprint_diagnostics, print_json};
use crate::compile_file;

pub fn run(policies: &[PathBuf], format: Format) -> Exit {
    let mut exit = Exit::Ok;
    let mut json = Vec::new();
    for path in policies {
        let name = path.display().to_string();
        match compile_file(path) {
            Ok(c) => {
                let p = &c.policy;
                match format {
                    Format::Human => {
                        eprint_diagnostics(&c.warnings, &c.sources);
                        println!(
                            "ok: {name}: agent '{}', {} filesystem rules, {} endpoints, {} APIs, {} warning(s)",
                            p.agent.name,
                            p.filesystem.rules.iter().filter(|r| r.origin.is_some()).count(),
                            p.network.allow.len(),
                            p.apis.len(),
                            c.warnings.len()
                        );
                    }
                    Format::Json => json.push(serde_json::json!({
                        "file": name,
                        "valid": true,
                        "agent": p.agent.name,
                        "digest": p.digest(),
                        "diagnostics": diagnostics_json(&c.warnings, &c.sources),
                    })),
                }
            }
            Err(f) => {
                exit = Exit::Invalid;
                let errors = f.diagnostics.iter().filter(|d| d.is_error()).count();
                match format {
                    Format::Human => {
                        eprint_diagnostics(&f.diagnostics, &f.sources);
                        eprintln!("error: {name} is invalid ({errors} error(s))");
                    }
                    Format::Json => json.push(serde_json::json!({
                        "file": name,
                        "valid": false,
                        "diagnostics": diagnostics_json(&f.diagnostics, &f.sources),
                    })),
                }
            }
        }
    }
    if format == Format::Json {
        print_json(&serde_json::Value::Array(json));
    }
    exit
}
