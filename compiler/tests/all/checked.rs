//! `aegis_policy::ir::Checked`: every policy the compiler lowers holds the IR's invariants,
//! and an IR read back from a bundle that breaks one is refused with what it breaks (a
//! sloppy or hostile build step must not hand the proxy, the supervisor or aegisd a policy
//! whose "one rule per path" or sorted lists the evaluator relies on are false).

use aegis_compiler::ir::Checked;
use serde_json::{Value, json};

use crate::common::example_policies;

/// The example policy's IR as JSON, as `policy.ir.json` holds it.
fn ir_of(name: &str) -> Value {
    let path = crate::common::repo_root().join("policies").join(name);
    let compiled = aegis_compiler::compile_file(&path).ok().expect("example compiles");
    compiled.policy.to_json()
}

fn refusal(v: &Value) -> String {
    match Checked::from_json(&serde_json::to_vec(v).unwrap()) {
        Ok(_) => panic!("a broken IR was accepted:\n{v:#}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_example_policy_round_trips_through_the_check() {
    for p in example_policies() {
        let compiled = aegis_compiler::compile_file(&p).ok().expect("example compiles");
        let bytes = serde_json::to_vec(&compiled.policy.to_json()).unwrap();
        let back = Checked::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(back.digest(), compiled.policy.digest(), "{}", p.display());
    }
}

#[test]
fn a_bundle_ir_that_breaks_an_invariant_is_refused_naming_it() {
    let base = ir_of("coding-agent.toml");

    // Two rules swapped: the evaluator and the emitters rely on the order.
    let mut v = base.clone();
    v["filesystem"]["rules"].as_array_mut().unwrap().swap(0, 1);
    assert!(refusal(&v).starts_with("filesystem rules: not sorted or not unique"), "{}", refusal(&v));

    // The same rule twice ("one rule per access and path").
    let mut v = base.clone();
    let first = v["filesystem"]["rules"][0].clone();
    v["filesystem"]["rules"].as_array_mut().unwrap().insert(0, first);
    assert!(refusal(&v).starts_with("filesystem rules: not sorted or not unique"), "{}", refusal(&v));

    // An origin pointing past the list of source files (rendering it would index past the end).
    let mut v = base.clone();
    v["agent"]["origin"] = json!({"file": 7, "span": {"start": 0, "end": 1}});
    assert_eq!(refusal(&v), "an origin names source file 7 of 1");

    // A layer without a level: the launch would not know whether it may go on without it.
    let mut v = base.clone();
    v["enforcement"]["layers"].as_object_mut().unwrap().remove("seccomp");
    assert_eq!(refusal(&v), "enforcement has no level for the seccomp layer");

    // An errno SECCOMP_RET_ERRNO cannot carry.
    let mut v = base.clone();
    v["syscalls"]["default_errno"] = json!(70000u32 % 65536);
    assert_eq!(refusal(&v), "errno 4464 is outside 1-4095");

    // A backwards port range on an allowed endpoint.
    let mut v = ir_of("research-agent.toml");
    let allow = v["network"]["allow"].as_array_mut().unwrap();
    assert!(!allow.is_empty(), "research-agent allows endpoints");
    allow[0]["ports"] = json!([{"first": 443, "last": 80}]);
    assert!(refusal(&v).contains("has a port range outside 1-65535 or backwards"), "{}", refusal(&v));

    // A path the language never writes (not canonical): refused as it is read.
    let mut v = base.clone();
    v["filesystem"]["rules"][0]["path"] = json!("/usr/../etc");
    assert!(refusal(&v).contains("path `/usr/../etc`"), "{}", refusal(&v));

    // An agent name that is not an identifier (it ends up in file and table names).
    let mut v = base;
    v["agent"]["name"] = json!("../x");
    assert_eq!(refusal(&v), "agent name `../x` is not a lower-case identifier");
}
