//! `docs/policy.md` is the language reference: it must name every diagnostic code and
//! every key of every section, so nothing the compiler accepts or reports is undocumented.

use aegis_compiler::diag::Code;
use aegis_compiler::syntax::schema::SECTIONS;

use crate::common::repo_root;

fn doc() -> String {
    std::fs::read_to_string(repo_root().join("docs/policy.md")).expect("docs/policy.md exists")
}

#[test]
fn every_diagnostic_code_is_documented() {
    let doc = doc();
    let missing: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).filter(|c| !doc.contains(&format!("`{c}`"))).collect();
    assert!(missing.is_empty(), "codes missing from docs/policy.md: {missing:?}");
}

#[test]
fn every_key_is_documented_in_its_section() {
    let doc = doc();
    let mut missing = Vec::new();
    for (section, keys) in SECTIONS {
        // Keys are documented in a table under the section's heading (`[filesystem]`, ...).
        let heading = if section.is_empty() { "## Top level".to_string() } else { format!("`[{section}]`") };
        let Some(start) = doc.find(&heading) else {
            missing.push(format!("heading {heading}"));
            continue;
        };
        let rest = &doc[start..];
        for k in *keys {
            if !rest.contains(&format!("| `{}`", k.name)) {
                missing.push(format!("[{section}] {}", k.name));
            }
        }
    }
    assert!(missing.is_empty(), "keys missing from docs/policy.md: {missing:?}");
}

#[test]
fn exit_codes_are_documented() {
    let doc = doc();
    for line in ["| 0 |", "| 1 |", "| 2 |", "| 3 |"] {
        assert!(doc.contains(line), "exit code row `{line}` missing");
    }
}
