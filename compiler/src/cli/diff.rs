//! `aegisc diff OLD NEW [--markdown]`: semantic permission diff of two policies or bundles.
//! Exit 0 when nothing widened, 1 when the agent gains any permission (CI can require a
//! second review on it), 2 on invalid input.

use std::fmt::Write as _;
use std::path::Path;

use super::{Exit, Format, eprint_diagnostics, print_json};
use crate::compile_file;
use crate::diff::{ChangeKind, PolicyDiff, diff};
use crate::ir::Checked;

/// A policy file, or a bundle directory's `policy.ir.json` (checked against the bundle's
/// recorded digest so a hand-edited IR is noticed).
pub fn load_policy(path: &Path) -> Result<Checked, String> {
    if path.is_dir() {
        let ir = path.join(aegis_targets::bundle::contract::POLICY_IR);
        let text = std::fs::read_to_string(&ir).map_err(|e| format!("cannot read {}: {e}", ir.display()))?;
        let policy = Checked::from_json(text.as_bytes()).map_err(|e| format!("{}: not an AEGIS policy IR: {e}", ir.display()))?;
        let recorded = std::fs::read_to_string(path.join(aegis_targets::bundle::contract::POLICY_DIGEST)).map_err(|e| format!("cannot read {}/policy.sha256: {e}", path.display()))?;
        if recorded.trim() != policy.digest() {
            return Err(format!("{}: the IR does not match the bundle's policy.sha256 (edited or corrupt); run `aegisc verify` on the bundle", path.display()));
        }
        Ok(policy)
    } else {
        compile_file(path).map(|c| c.policy).map_err(|f| {
            eprint_diagnostics(&f.diagnostics, &f.sources);
            format!("{} is invalid", path.display())
        })
    }
}

fn sign(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "+",
        ChangeKind::Removed => "-",
        ChangeKind::Changed => "~",
    }
}

pub fn render_human(d: &PolicyDiff) -> String {
    let mut o = String::new();
    if d.changes.is_empty() {
        let _ = writeln!(o, "no permission changes for agent '{}'", d.agent);
    } else if d.widened() {
        let n = d.changes.iter().filter(|c| c.widens).count();
        let _ = writeln!(o, "permissions WIDENED for agent '{}' ({n} of {} changes widen):", d.agent, d.changes.len());
    } else {
        let _ = writeln!(o, "permissions narrowed or unchanged for agent '{}' ({} changes):", d.agent, d.changes.len());
    }
    for c in &d.changes {
        let _ = writeln!(o, "  {} {}{}", sign(c.kind), c.text, if c.widens { "   [widens]" } else { "" });
    }
    let _ = writeln!(o, "exposure score {:.1} → {:.1}", d.exposure_old, d.exposure_new);
    o
}

pub fn render_markdown(d: &PolicyDiff) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### AEGIS policy diff: `{}`\n", d.agent);
    if d.widened() {
        let _ = writeln!(o, "**⚠️ Permissions widened**: this change gives the agent new permissions and needs a security review.\n");
    } else if d.changes.is_empty() {
        let _ = writeln!(o, "No permission changes.\n");
    } else {
        let _ = writeln!(o, "✅ Permissions narrowed or unchanged.\n");
    }
    if !d.changes.is_empty() {
        let _ = writeln!(o, "| | area | change | effect |\n|---|---|---|---|");
        for c in &d.changes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                sign(c.kind),
                c.category,
                c.text.replace('|', "\\|"),
                if c.widens { "**widens**" } else { "narrows / neutral" }
            );
        }
        o.push('\n');
    }
    let delta = d.exposure_new - d.exposure_old;
    let _ = writeln!(o, "**Exposure score:** {:.1} → {:.1} ({delta:+.1})", d.exposure_old, d.exposure_new);
    o
}

pub fn run(old: &Path, new: &Path, markdown: bool, format: Format) -> Exit {
    let load = |p: &Path| load_policy(p).map_err(|e| eprintln!("error: {e}"));
    let (Ok(a), Ok(b)) = (load(old), load(new)) else { return Exit::Invalid };
    let d = diff(&a, &b);
    match (format, markdown) {
        (Format::Json, _) => print_json(&serde_json::json!({
            "agent": d.agent,
            "widened": d.widened(),
            "changes": d.changes,
            "exposure": {"old": d.exposure_old, "new": d.exposure_new},
        })),
        (Format::Human, true) => print!("{}", render_markdown(&d)),
        (Format::Human, false) => print!("{}", render_human(&d)),
    }
    if d.widened() { Exit::Denied } else { Exit::Ok }
}
