//! `aegis::lint::private_tmp_grant`: a literal grant under `/tmp` is the sandbox's private
//! `/tmp`, not the host's directory (the mount plan does not bind it: on a shared host
//! another user may have made it). The policy's author is told so, with the fix: a launch
//! parameter, which is checked at launch and bound.

use aegis_compiler::diag::Code;

fn private_tmp_warnings(fs: &str) -> Vec<String> {
    let text = format!("version = 1\n[agent]\nname = \"t\"\n[parameters]\nWORKSPACE = \"the checkout\"\n{fs}\n[resources]\nmemory = \"1GiB\"\npids = 64\nwall_time = \"1h\"\n");
    let c = aegis_compiler::compile_bytes("t.toml", text.as_bytes()).ok().expect("compiles");
    c.warnings.iter().filter(|w| w.code == Code::LintPrivateTmp).map(|w| w.message.clone()).collect()
}

#[test]
fn a_literal_grant_under_tmp_is_flagged_and_a_parameter_is_not() {
    assert_eq!(
        private_tmp_warnings("[filesystem]\nwrite = [\"/tmp/proj\"]"),
        ["'/tmp/proj' is inside the sandbox's private /tmp: the agent gets an empty directory of its own there, never the host's"]
    );
    assert_eq!(private_tmp_warnings("[filesystem]\nread = [\"/tmp/a/b\"]").len(), 1);
    assert_eq!(private_tmp_warnings("[filesystem]\nread = [\"/usr\"]\n[exec]\nallow = [\"/tmp/tools\"]").len(), 1);
    // The parameter is bound from the host (checked at launch); /tmp itself is the
    // sandbox's own on purpose; a deny hides nothing the agent could expect to see.
    assert!(private_tmp_warnings("[filesystem]\nwrite = [\"${WORKSPACE}\"]").is_empty());
    assert!(private_tmp_warnings("[filesystem]\nwrite = [\"/tmp\"]").is_empty());
    assert!(private_tmp_warnings("[filesystem]\nread = [\"/usr\"]\ndeny = [\"/tmp/secret\"]").is_empty());
    assert!(private_tmp_warnings("[filesystem]\nread = [\"/tmpfoo\"]").is_empty());
}
