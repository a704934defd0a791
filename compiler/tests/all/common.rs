//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

use aegis_compiler::diag::{Code, Diagnostic};

/// The repository root (the compiler crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `f` with insta writing snapshots to `snapshots/<area>/`, named without a module
/// prefix so a file is named after what it shows.
pub fn with_snapshots(area: &str, f: impl FnOnce()) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(repo_root().join("snapshots").join(area));
    s.set_prepend_module_to_snapshot(false);
    s.bind(f);
}

pub fn codes(diags: &[Diagnostic]) -> Vec<Code> {
    diags.iter().filter(|d| d.is_error()).map(|d| d.code).collect()
}

/// The example policies shipped in `policies/`, sorted.
pub fn example_policies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}
