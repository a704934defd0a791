//! The built-in protection list: paths below a write grant that hold code or configuration
//! the user's own tools run later, on the host, outside the sandbox.
//!
//! Input: none (a static table). Output: [`PROTECTED`], each entry a path relative to a write
//! grant's root and the reason it is protected, used by `lower` to add one read-only
//! carve-out per entry below every write grant (unless `[filesystem] protect = false` or an
//! `unprotect` entry covers it). Invariants: entries are relative, normalised paths without
//! globs; the list is at least as wide as sandbox-runtime's mandatory deny list (its
//! `DANGEROUS_FILES`, `DANGEROUS_DIRECTORIES`, `.claude/commands`, `.claude/agents`, the
//! Claude settings files, `.git/hooks` and `.git/config`).
//!
//! What makes a path belong here: writing it lets the agent run a command on the host when
//! the user later does something that is not expected to run project code — `git status`,
//! opening a shell or the editor, entering the directory, starting an agent tool. Project
//! files the user runs knowingly (`Makefile`, `package.json` scripts, build scripts, test
//! configuration) are code too, but protecting them would stop the agent from doing its
//! job; review them before running them (docs/policy.md says so).

/// One protected path below a write grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected {
    /// Relative to the write grant's root, e.g. `.git/hooks`.
    pub path: &'static str,
    /// Why writing it is dangerous, in words a reviewer understands.
    pub why: &'static str,
}

const fn p(path: &'static str, why: &'static str) -> Protected {
    Protected { path, why }
}

const SHELL: &str = "a shell runs it when it starts";

/// The list, grouped as `docs/policy.md` shows it.
pub const PROTECTED: &[Protected] = &[
    // git: configuration and hooks that `git status`, `git commit`, ... run on the host
    p(".git/config", "git reads it on every command: core.fsmonitor, core.hooksPath, aliases, filters and credential helpers run commands"),
    p(".git/config.worktree", "git reads it like .git/config when extensions.worktreeConfig is set"),
    p(".git/hooks", "git runs the scripts here on commit, checkout, merge and push"),
    p(".git/modules", "submodules' own config and hooks: git status and diff run git inside every submodule"),
    p(".git/worktrees", "linked worktrees' admin files: commondir can send git to another repository's config"),
    p(".gitmodules", "submodule paths and URLs git checks out and fetches"),
    p(".gitconfig", "git's user configuration, read on every command when the grant is a home directory"),
    p(".husky", "git hooks of projects that use husky (core.hooksPath)"),
    p(".pre-commit-config.yaml", "commands the pre-commit hook runs on every commit"),
    // shells
    p(".bashrc", SHELL),
    p(".bash_profile", SHELL),
    p(".bash_login", SHELL),
    p(".bash_logout", "bash runs it when a login shell exits"),
    p(".profile", SHELL),
    p(".zshenv", SHELL),
    p(".zshrc", SHELL),
    p(".zprofile", SHELL),
    p(".zlogin", SHELL),
    p(".zlogout", "zsh runs it when a login shell exits"),
    p(".envrc", "direnv runs it when a shell enters the directory"),
    // tools, editors and agents
    p(".ripgreprc", "ripgrep reads its options here: --pre runs a command on every file searched"),
    p(".mcp.json", "MCP servers an agent tool starts: each is a command run on the host"),
    p(".vscode", "editor tasks, launch configurations and settings that run commands"),
    p(".idea", "IDE run configurations and settings that run commands"),
    p(".cursor", "editor rules, settings and MCP servers"),
    p(".claude/commands", "agent slash commands: prompts and shell commands the agent tool runs"),
    p(".claude/agents", "agent definitions the agent tool loads"),
    p(".claude/settings.json", "agent tool settings: hooks run commands, permissions widen what it may do"),
    p(".claude/settings.local.json", "agent tool settings: hooks run commands, permissions widen what it may do"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::path::PathPattern;

    #[test]
    fn entries_are_relative_normalised_paths() {
        for e in PROTECTED {
            let abs = format!("/{}", e.path);
            let parsed = PathPattern::parse(&abs, &|_| false).unwrap_or_else(|err| panic!("{}: {err:?}", e.path));
            assert_eq!(parsed.to_string(), abs);
            assert!(!e.why.is_empty());
        }
    }

    #[test]
    fn at_least_sandbox_runtimes_mandatory_list() {
        // anthropic-experimental/sandbox-runtime src/sandbox/sandbox-utils.ts (DANGEROUS_FILES,
        // DANGEROUS_DIRECTORIES minus .git, .claude/commands, .claude/agents),
        // linux-sandbox-utils.ts (.git/hooks, .git/config) and the settings files
        // sandbox-manager.ts adds.
        let theirs = [
            ".gitconfig", ".gitmodules", ".bashrc", ".bash_profile", ".zshrc", ".zprofile", ".profile", ".ripgreprc",
            ".mcp.json", ".vscode", ".idea", ".claude/commands", ".claude/agents", ".git/hooks", ".git/config",
            ".claude/settings.json", ".claude/settings.local.json",
        ];
        for t in theirs {
            assert!(PROTECTED.iter().any(|e| e.path == t), "{t} is missing from the protection list");
        }
    }
}
