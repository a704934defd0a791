//! The invalid-policy corpus: each file in `tests/fixtures/invalid/` (and a few inputs
//! generated here because they are too big or too deep to commit) must be rejected with
//! its expected diagnostic code, never panic, and render the same diagnostics as the
//! reviewed snapshot in `snapshots/diagnostics/<fixture>.snap`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aegis_compiler::diag::{Code, render_human};
use aegis_compiler::{Failed, compile_bytes, compile_file};

use crate::common::{codes, with_snapshots};

/// Fixture (file stem) → a code its diagnostics must contain.
const EXPECTED: &[(&str, Code)] = &[
    ("toml-syntax", Code::TomlSyntax),
    ("toml-duplicate-key", Code::TomlSyntax),
    ("toml-unclosed-string", Code::TomlSyntax),
    ("not-utf8", Code::NotUtf8),
    ("wrong-type-string", Code::WrongType),
    ("wrong-type-array", Code::WrongType),
    ("wrong-type-section", Code::WrongType),
    ("wrong-type-array-entry", Code::WrongType),
    ("wrong-type-version", Code::WrongType),
    ("wrong-type-cpu-string", Code::WrongType),
    ("wrong-type-protect", Code::WrongType),
    ("unknown-key-top", Code::UnknownKey),
    ("unknown-key-agent", Code::UnknownKey),
    ("unknown-key-filesystem", Code::UnknownKey),
    ("unknown-protection", Code::UnknownProtection),
    ("unknown-key-exec", Code::UnknownKey),
    ("unknown-key-network", Code::UnknownKey),
    ("unknown-key-api", Code::UnknownKey),
    ("unknown-key-credential", Code::UnknownKey),
    ("unknown-key-resources", Code::UnknownKey),
    ("unknown-key-syscalls", Code::UnknownKey),
    ("unknown-key-enforcement", Code::UnknownKey),
    ("unknown-key-endpoint", Code::UnknownKey),
    ("missing-agent-name", Code::MissingKey),
    ("missing-api-host", Code::MissingKey),
    ("missing-endpoint-host", Code::MissingKey),
    ("unsupported-version", Code::UnsupportedVersion),
    ("empty-agent-name", Code::EmptyValue),
    ("empty-path", Code::EmptyValue),
    ("empty-command", Code::EmptyValue),
    ("empty-scope", Code::EmptyValue),
    ("invalid-agent-name", Code::InvalidName),
    ("invalid-parameter-name", Code::InvalidName),
    ("invalid-api-name", Code::InvalidName),
    ("extends-cycle-2", Code::ExtendsCycle),
    ("unknown-profile-name", Code::UnknownProfile),
    ("unknown-profile-version", Code::UnknownProfile),
    ("unknown-profile-malformed", Code::UnknownProfile),
    ("extends-cycle-3", Code::ExtendsCycle),
    ("extends-missing", Code::ExtendsMissing),
    ("extends-invalid-base", Code::UnknownKey),
    ("relative-path", Code::RelativePath),
    ("home-path", Code::HomePath),
    ("non-normalised-path", Code::NonNormalPath),
    ("dotdot-path", Code::DotDotPath),
    ("unsupported-glob", Code::UnsupportedGlob),
    ("invalid-glob", Code::InvalidGlob),
    ("unknown-parameter", Code::UnknownParameter),
    ("invalid-path-parameter", Code::InvalidPath),
    ("invalid-path-nul", Code::InvalidPath),
    ("invalid-path-long-component", Code::InvalidPath),
    ("invalid-network-mode", Code::InvalidMode),
    ("invalid-endpoint", Code::InvalidEndpoint),
    ("invalid-host", Code::InvalidHost),
    ("invalid-wildcard-tld", Code::InvalidHost),
    ("cidr-host-bits", Code::InvalidCidr),
    ("cidr-prefix-too-long", Code::InvalidCidr),
    ("invalid-ip", Code::InvalidCidr),
    ("port-zero", Code::InvalidPort),
    ("port-too-large", Code::InvalidPort),
    ("port-reversed-range", Code::InvalidPort),
    ("port-not-a-number", Code::InvalidPort),
    ("port-float", Code::InvalidPort),
    ("port-none", Code::InvalidPort),
    ("api-port-out-of-range", Code::InvalidPort),
    ("invalid-protocol", Code::InvalidProtocol),
    ("endpoint-in-none-mode", Code::EndpointInNoneMode),
    ("endpoint-in-default-mode", Code::EndpointInNoneMode),
    ("wildcard-in-host-mode", Code::WildcardInHostMode),
    ("missing-resolver", Code::MissingResolver),
    ("invalid-dns-address", Code::InvalidAddress),
    ("invalid-http-rule", Code::InvalidHttpRule),
    ("invalid-credential-two-sources", Code::InvalidCredential),
    ("invalid-credential-header", Code::InvalidCredential),
    ("invalid-credential-no-header", Code::InvalidCredential),
    ("invalid-credential-file", Code::InvalidCredential),
    ("invalid-api-host", Code::InvalidHost),
    ("api-without-proxy", Code::ApiWithoutProxy),
    ("api-in-none-mode", Code::ApiWithoutProxy),
    ("duplicate-api-host", Code::DuplicateApiHost),
    ("exe-needs-proxy", Code::ExeNeedsProxy),
    ("invalid-size-ambiguous-unit", Code::InvalidSize),
    ("invalid-size-unit-case", Code::InvalidSize),
    ("invalid-size-fraction", Code::InvalidSize),
    ("invalid-duration", Code::InvalidDuration),
    ("invalid-duration-no-unit", Code::InvalidDuration),
    ("negative-limits", Code::NegativeLimit),
    ("negative-size-string", Code::NegativeLimit),
    ("out-of-range-limits", Code::OutOfRange),
    ("out-of-range-landlock-abi", Code::OutOfRange),
    ("out-of-range-tmp-size", Code::OutOfRange),
    ("unknown-syscall", Code::UnknownSyscall),
    ("invalid-errno", Code::InvalidErrno),
    ("invalid-errno-number", Code::InvalidErrno),
    ("conflicting-syscall", Code::ConflictingSyscall),
    ("io-uring-unmediated", Code::IoUringUnmediated),
    ("unix-relative-path", Code::RelativePath),
    ("invalid-seccomp-base", Code::InvalidProfile),
    ("invalid-seccomp-profile-missing", Code::InvalidProfile),
    ("invalid-enforcement", Code::InvalidEnforcement),
    ("many-errors", Code::RelativePath),
];

/// Codes only reachable through inputs generated by the tests below.
const GENERATED: &[(&str, Code)] = &[
    ("io-missing-file", Code::Io),
    ("io-directory", Code::Io),
    ("too-large", Code::TooLarge),
    ("too-large-bytes", Code::TooLarge),
    ("deeply-nested-arrays", Code::TomlSyntax),
    ("deeply-nested-tables", Code::TomlSyntax),
    ("extends-too-deep", Code::ExtendsTooDeep),
    ("long-line-toml-syntax", Code::TomlSyntax),
];

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// Fixture files relative to the crate (so rendered names are stable), sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| Path::new("tests/fixtures/invalid").join(p.file_name().unwrap()))
        .collect();
    v.sort();
    v
}

fn expect_failure(name: &str, result: Result<aegis_compiler::Compiled, Failed>, want: Code) -> Failed {
    let failed = match result {
        Ok(c) => panic!("{name}: expected {want}, but the policy compiled (agent {})", c.policy.agent.name),
        Err(f) => f,
    };
    let errors = codes(&failed.diagnostics);
    assert!(!errors.is_empty(), "{name}: failed without an error diagnostic");
    assert!(errors.contains(&want), "{name}: expected {want}, got {errors:?}");
    for d in &failed.diagnostics {
        assert!(!d.message.is_empty(), "{name}: empty message for {}", d.code);
        assert!(d.help.is_some() || d.code == Code::TomlSyntax, "{name}: {} has no help text", d.code);
    }
    failed
}

fn snapshot(name: &str, failed: &Failed, redact: Option<&str>) {
    let mut text = render_human(&failed.diagnostics, &failed.sources, false);
    if let Some(r) = redact {
        text = text.replace(r, "<tmp>");
    }
    with_snapshots("diagnostics", || insta::assert_snapshot!(name.to_string(), text));
}

/// One line per diagnostic (code, message, location, help), for generated inputs whose
/// source lines are too long to show (miette prints the whole offending line).
fn snapshot_compact(name: &str, failed: &Failed) {
    let mut text = String::new();
    for d in &failed.diagnostics {
        let at = d.origin.map(|o| failed.sources.locate(o).to_string()).unwrap_or_default();
        text.push_str(&format!("{}: {} at {at}\nhelp: {}\n", d.code, d.message, d.help.as_deref().unwrap_or("")));
    }
    with_snapshots("diagnostics", || insta::assert_snapshot!(name.to_string(), text));
}

#[test]
fn every_fixture_is_in_the_expectation_table_and_back() {
    // `compile_file` relative paths resolve against the crate directory, as cargo runs tests there.
    let on_disk: BTreeSet<String> = fixtures().iter().map(|p| crate::common::stem(p)).collect();
    let listed: BTreeSet<String> = EXPECTED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, listed, "fixtures on disk and the EXPECTED table differ");
    assert!(on_disk.len() >= 45, "the corpus must hold at least 45 fixtures");
}

#[test]
fn every_error_code_has_a_fixture() {
    let covered: BTreeSet<Code> = EXPECTED.iter().chain(GENERATED).map(|(_, c)| *c).collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        // `internal` is a bug in aegisc, which no policy can trigger by design; the IR check
        // behind it is tested on tampered IRs (`checked`).
        .filter(|c| !c.as_str().starts_with("aegis::lint::") && **c != Code::Internal && !covered.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(missing.is_empty(), "error codes without a fixture: {missing:?}");
}

#[test]
fn every_fixture_fails_with_its_code_and_snapshot() {
    for (name, want) in EXPECTED {
        let path = Path::new("tests/fixtures/invalid").join(format!("{name}.toml"));
        let failed = expect_failure(name, compile_file(&path), *want);
        snapshot(name, &failed, None);
    }
}

#[test]
fn fixture_bytes_fail_the_same_way_through_compile_bytes() {
    // The fuzzer and stdin go through `compile_bytes`; it must agree with `compile_file`
    // for every single-file fixture (extends fixtures resolve relative to the cwd there).
    for (name, want) in EXPECTED.iter().filter(|(n, _)| !n.starts_with("extends-")) {
        let bytes = std::fs::read(fixture_dir().join(format!("{name}.toml"))).unwrap();
        expect_failure(name, compile_bytes(&format!("{name}.toml"), &bytes), *want);
    }
}

#[test]
fn missing_file_and_directory_are_io_errors() {
    let f = expect_failure("io-missing-file", compile_file(Path::new("tests/fixtures/invalid/no-such-policy.toml")), Code::Io);
    snapshot("io-missing-file", &f, None);
    let f = expect_failure("io-directory", compile_file(Path::new("tests/fixtures/invalid/extends")), Code::Io);
    snapshot("io-directory", &f, None);
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("version = 1\n[agent]\nname = \"huge\"\n");
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    while text.len() <= 8 * 1024 * 1024 {
        text.push_str(line);
    }
    let path = dir.path().join("huge.toml");
    std::fs::write(&path, &text).unwrap();
    let f = expect_failure("too-large", compile_file(&path), Code::TooLarge);
    snapshot("too-large", &f, Some(&dir.path().display().to_string()));
    let f = expect_failure("too-large-bytes", compile_bytes("huge.toml", text.as_bytes()), Code::TooLarge);
    snapshot("too-large-bytes", &f, None);
    // A device or pipe says it is 0 bytes long: reading stops at the limit all the same
    // (`aegisc validate /dev/zero` used to read until memory ran out).
    expect_failure("too-large-device", compile_file(Path::new("/dev/zero")), Code::TooLarge);
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let arrays = format!("version = 1\n[agent]\nname = \"deep\"\n[filesystem]\nread = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let f = expect_failure("deeply-nested-arrays", compile_bytes("deep-arrays.toml", arrays.as_bytes()), Code::TomlSyntax);
    snapshot_compact("deeply-nested-arrays", &f);
    let tables = format!("version = 1\n[agent]\nname = \"deep\"\n[filesystem]\nread = {}{}\n", "{ a = ".repeat(depth), "}".repeat(depth));
    let f = expect_failure("deeply-nested-tables", compile_bytes("deep-tables.toml", tables.as_bytes()), Code::TomlSyntax);
    snapshot_compact("deeply-nested-tables", &f);
}

/// Issue 11.9: a valid-looking one-line policy of about 270 KB with one bad entry made
/// miette's renderer panic (Rust format widths are 16-bit). Every such input is a coded
/// error, shown in a window of its long line (line and column still exact), in a few
/// shapes: the bad entry near the start, deep in the line, at its end, itself 200 KB long,
/// with multi-byte characters where the window cuts, and a TOML syntax error far right.
#[test]
fn very_long_lines_are_coded_errors_shown_in_a_window() {
    let head = "version = 1\n[agent]\nname = \"long\"\ndescription = \"one very long line\"\n[filesystem]\n";
    let tail = "\n[exec]\nallow = [\"/usr/bin/python3\"]\n[network]\nmode = \"none\"\n";
    let entries = |n: usize, bad: usize, bad_entry: &str| -> String {
        let v: Vec<String> = (0..n).map(|i| if i == bad { bad_entry.to_string() } else { format!("\"/data/dir{i:05}\"") }).collect();
        format!("{head}read = [{}]{tail}", v.join(", "))
    };
    let cases: Vec<(&str, String, Code)> = vec![
        ("long-line-bad-entry", entries(16_000, 15_000, "\"relative/bad\""), Code::RelativePath),
        ("long-line-bad-first", entries(16_000, 0, "\"relative/bad\""), Code::RelativePath),
        ("long-line-bad-last", entries(16_000, 15_999, "\"relative/bad\""), Code::RelativePath),
        ("long-line-long-entry", entries(100, 50, &format!("\"data/{}\"", "x/".repeat(100_000))), Code::InvalidPath),
        ("long-line-multibyte", entries(8_000, 4_000, &format!("\"{}relatif/é\"", "é".repeat(40))), Code::RelativePath),
        ("long-line-toml-syntax", format!("{head}read = [{}, \"/a\" \"/b\"]{tail}", vec!["\"/data/x\""; 30_000].join(", ")), Code::TomlSyntax),
    ];
    for (name, text, want) in cases {
        assert!(text.len() > 200_000 || name == "long-line-multibyte", "{name}: {} bytes", text.len());
        let f = expect_failure(name, compile_bytes(&format!("{name}.toml"), text.as_bytes()), want);
        let rendered = render_human(&f.diagnostics, &f.sources, false);
        assert!(rendered.lines().all(|l| l.len() < 1000), "{name}: the long line is not shown whole");
        snapshot(name, &f, None);
    }
}

#[test]
fn extends_chains_deeper_than_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = aegis_compiler::compose::MAX_DEPTH + 4;
    for i in 0..n {
        let ext = if i + 1 < n { format!("extends = [\"level-{}.toml\"]\n", i + 1) } else { String::new() };
        let text = format!("version = 1\n[agent]\nname = \"level-{i}\"\n{ext}");
        std::fs::write(dir.path().join(format!("level-{i}.toml")), text).unwrap();
    }
    let f = expect_failure("extends-too-deep", compile_file(&dir.path().join("level-0.toml")), Code::ExtendsTooDeep);
    snapshot("extends-too-deep", &f, Some(&dir.path().display().to_string()));
}

#[test]
fn extends_cycles_name_every_file_in_the_cycle() {
    for (name, files) in [
        ("extends-cycle-2", &["extends-cycle-2.toml", "cycle2-b.toml"][..]),
        ("extends-cycle-3", &["extends-cycle-3.toml", "cycle3-b.toml", "cycle3-c.toml"][..]),
    ] {
        let f = compile_file(&Path::new("tests/fixtures/invalid").join(format!("{name}.toml"))).err().unwrap();
        let d = f.diagnostics.iter().find(|d| d.code == Code::ExtendsCycle).unwrap();
        for file in files {
            assert!(d.message.contains(file), "{name}: cycle message `{}` does not name {file}", d.message);
        }
        assert_eq!(d.message.matches('→').count(), files.len(), "{name}: `{}`", d.message);
    }
}

#[test]
fn unknown_keys_suggest_the_intended_key() {
    for (name, suggestion) in [
        ("unknown-key-top", "filesystem"),
        ("unknown-key-agent", "description"),
        ("unknown-key-filesystem", "write"),
        ("unknown-key-exec", "allow"),
        ("unknown-key-network", "mode"),
        ("unknown-key-api", "host"),
        ("unknown-key-credential", "from_env"),
        ("unknown-key-resources", "memory"),
        ("unknown-key-syscalls", "allow"),
        ("unknown-key-enforcement", "landlock"),
        ("unknown-key-endpoint", "ports"),
    ] {
        let f = compile_file(&Path::new("tests/fixtures/invalid").join(format!("{name}.toml"))).err().unwrap();
        let d = f.diagnostics.iter().find(|d| d.code == Code::UnknownKey).unwrap();
        let help = d.help.as_deref().unwrap_or("");
        assert!(help.starts_with(&format!("did you mean `{suggestion}`?")), "{name}: help was `{help}`");
    }
}

#[test]
fn diagnostics_point_at_the_offending_text() {
    // The span of each error must cover the value the message talks about.
    for (name, needle) in [
        ("relative-path", "\"usr/lib\""),
        ("home-path", "\"~/.config/agent\""),
        ("dotdot-path", "\"${WORKSPACE}/../etc\""),
        ("port-zero", "\"github.com:0\""),
        ("cidr-host-bits", "\"10.0.0.1/8:5432\""),
        ("invalid-size-ambiguous-unit", "\"512M\""),
        ("invalid-duration", "\"5y\""),
        ("unknown-syscall", "\"ptrac\""),
        ("invalid-enforcement", "\"optional\""),
        ("unknown-key-top", "filesytem"),
    ] {
        let f = compile_file(&Path::new("tests/fixtures/invalid").join(format!("{name}.toml"))).err().unwrap();
        let d = f.diagnostics.iter().find(|d| d.is_error()).unwrap();
        let snippet = f.sources.snippet(d.origin.unwrap());
        assert_eq!(snippet, needle, "{name}: the first error points at `{snippet}`");
    }
}
