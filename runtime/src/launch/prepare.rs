//! Step 1 of a launch, prepare: everything decided before anything exists.
//!
//! Input: the launch options. Output: the verified bundle and every stage's plan
//! ([`Prepared`], [`ChildLayers`]), the agent's identity, environment, working directory and
//! command, and the `nft` loads that do not need the agent already started. Invariants:
//! nothing is created here but the premade network namespace and the host table's load,
//! both owned by values that remove them when dropped; a launch that will be refused is
//! refused here (bundle, identity, parameters, command), so it leaves nothing behind.

use aegis_audit::Event;
use aegis_targets::bundle::NetworkMode;

use super::Clock;
use crate::audit::Audit;
use crate::exit::RunError;
use crate::identity::{self, Identity};
use crate::report::{EnforcementReport, Layer, LayerStatus};
use crate::stage::verify::{LaunchOptions, Provenance, Verified};
use crate::stage::{self, Instance};

/// Everything a launch decided before anything exists (see [`prepare`]); the steps after it
/// take what they consume out of it.
pub(super) struct Prepared {
    pub(super) v: Verified,
    pub(super) ident: Identity,
    pub(super) proxy_mode: bool,
    pub(super) proxy_prep: Option<stage::proxy::Prepared>,
    pub(super) instance: Instance,
    pub(super) cg: Option<stage::cgroup::Prepared>,
    pub(super) nftp: Option<stage::nftables::Prepared>,
    pub(super) landlock_note: Option<String>,
    pub(super) seccomp_note: Option<String>,
    pub(super) mediation: Option<stage::seccomp::Mediation>,
    /// The agent's environment.
    pub(super) env: Vec<(String, String)>,
    /// Where it starts (and whether `--cwd` asked for it), and what it runs.
    pub(super) cwd: std::path::PathBuf,
    pub(super) cwd_asked: bool,
    pub(super) command_path: std::path::PathBuf,
    /// The agent shares the host's network namespace (cgroup-matched host mode).
    pub(super) host_net: bool,
    /// Host mode forwarded from the agent's own namespace.
    pub(super) forwarded: Option<stage::nftables::Forwarded>,
    pub(super) force_no_userns: bool,
    /// The agent's network namespace, made and being loaded by `nft` (root, none/proxy).
    pub(super) premade_netns: Option<aegis_targets::nftables::PendingNetns>,
    /// The nftables line of the report so far (a host-mode load that could not start).
    pub(super) nft_layer: Layer,
    /// Host mode (root, cgroup2): the table loading into the host's namespace.
    pub(super) host_load: Option<aegis_targets::nftables::HostLoad>,
}

/// The child's Landlock and seccomp plans, decoded by [`prepare`] and moved into the child's
/// plan by [`super::spawn`] (the only two stage plans that do not depend on the isolation).
pub(super) struct ChildLayers {
    pub(super) landlock: stage::landlock::ChildLandlock,
    pub(super) seccomp: stage::seccomp::ChildSeccomp,
}

/// Verify the bundle, decide the agent's identity, prepare every stage's plan, resolve the
/// command, and start the `nft` loads that do not need the agent (premade namespace, host
/// table): the longest steps of a launch run while the rest of it happens.
pub(super) fn prepare(opts: &LaunchOptions, audit: &mut Audit, report: &mut EnforcementReport, clock: &mut Clock) -> Result<(Prepared, ChildLayers), RunError> {
    // ── 1. verify (the bundle, then everything derived from it) ────────────────────────
    let bundle_path = opts.bundle.path().display().to_string();
    let v = match stage::verify::run(opts) {
        Ok(v) => v,
        Err(e) => {
            audit.record(Event::BundleRefused {
                path: bundle_path,
                reason: e.to_string(),
            })?;
            return Err(e);
        }
    };
    audit.set_context(&v.manifest.agent, &v.bundle_sha256, &v.manifest.policy_sha256);
    clock.lap("verify");
    match &v.provenance {
        Provenance::Signed { key_id } => {
            audit.queue(Event::BundleVerified {
                path: bundle_path.clone(),
                key_id: key_id.clone(),
            });
            report.push(Layer::new("verify", LayerStatus::Fully, format!("signed by key {key_id}; digests, expiry, serial {} ok", v.manifest.serial)));
        }
        Provenance::UnsignedAllowed => {
            audit.queue(Event::UnsignedBundleAllowed {
                path: bundle_path.clone(),
                reason: "--allow-unsigned".into(),
            });
            report.push(Layer::new("verify", LayerStatus::Partially, "UNSIGNED bundle accepted (--allow-unsigned); digests checked"));
        }
        Provenance::LocalPolicy { path, sha256 } => {
            // Nobody signed it: the person running `aegis run` wrote or chose the policy.
            // Said as such, never as a verified bundle.
            let what = Provenance::local_description(path, sha256);
            audit.queue(Event::UnsignedBundleAllowed {
                path: bundle_path.clone(),
                reason: format!("{what}: compiled in memory by `aegis run`"),
            });
            report.push(Layer::new("verify", LayerStatus::Partially, format!("{what}; compiled in memory, digests checked")));
        }
    }
    // Who the agent runs as (refused input, like the bundle, before anything exists).
    let ident = identity::decide(opts.user.as_deref(), &opts.groups)?;
    report.identity = Some((ident.describe(), ident.to_audit()));
    let proxy_mode = v.manifest.network_mode == NetworkMode::Proxy;
    let proxy_prep = if proxy_mode { Some(stage::proxy::prepare(&v, &opts.resolve, &opts.upstream_ca, opts.learn.as_ref())?) } else { None };

    clock.lap("identity+proxy");
    // Everything is parsed and prepared now, before any namespace or cgroup exists.
    let instance = Instance::new();
    let cg = stage::cgroup::prepare(&v)?;
    // `host` mode filters the host's namespace only for root with a cgroup2 tree; anyone
    // else's agent gets its own namespace with the granted endpoints forwarded.
    let host_mode = stage::nftables::HostMode::decide(ident.root, cg.as_ref().map(|p| &p.layout));
    let nftp = stage::nftables::prepare(&v, &instance, host_mode)?;
    let (landlock_child, landlock_note) = stage::landlock::prepare(&v)?;
    let tracing = stage::seccomp::Tracing { explain: opts.explain, learn: opts.learn.clone() };
    let (seccomp_child, seccomp_note, mediation) = stage::seccomp::prepare(&v, &tracing)?;
    let judge = stage::exec::Judge::of(&v)?;
    let mut env = agent_environment(&opts.env, stage::exec::default_path(judge.as_ref().map(|j| j.policy())))?;
    if let Some(p) = &proxy_prep {
        // The proxy's variables win over `--env`: the agent cannot be pointed elsewhere.
        env.retain(|(k, _)| !p.env.iter().any(|(pk, _)| pk == k));
        env.extend(p.env.iter().cloned());
        env.sort();
    }
    // Where the agent starts and what it runs, as the sandbox sees them; a command the
    // policy does not let it execute is refused here, before anything exists.
    let (cwd, cwd_asked) = stage::exec::working_dir(judge.as_ref(), opts.cwd.as_deref(), std::env::current_dir().ok())?;
    let command_path = stage::exec::resolve(v.command.first().map(String::as_str).unwrap_or_default(), &env, &cwd, judge.as_ref())?;
    clock.lap("prepare");
    // The agent shares the host's network namespace (cgroup-matched host mode) or not.
    let host_net = v.manifest.network_mode == NetworkMode::Host && host_mode == stage::nftables::HostMode::Cgroup;
    // Host mode forwarded from the agent's own namespace: (TCP, UDP) targets.
    let forwarded = nftp.as_ref().and_then(|p| p.forwarded.clone());
    let force_no_userns = std::env::var_os("AEGIS_EXEC_TEST_NO_USERNS").is_some();
    // none/proxy: make the agent's network namespace now and let `nft` load its table
    // while everything else is prepared and the agent cloned into it (the load is the
    // longest step of a launch). Falls back to loading after clone if it cannot start.
    // (Root only: a user cannot make a network namespace outside a user namespace.)
    let premade_netns = match &nftp {
        Some(p) if !host_net && ident.root && !force_no_userns => stage::nftables::start_premade(p),
        _ => None,
    };
    // host mode (root, cgroup2): `nft` loads the table into the host's namespace from now
    // on; only its dispatch rule needs the agent's leaf, and it is added over netlink once
    // the agent is cloned, before it may run.
    let mut nft_layer = Layer::new("nftables", LayerStatus::NotEnforced, "no nftables.json in bundle");
    let mut host_load = None;
    if host_net && let Some(p) = &nftp {
        match stage::nftables::start_host(&v, p)? {
            Ok(l) => host_load = Some(l),
            Err(layer) => nft_layer = layer,
        }
    }
    clock.lap("nft start");

    let layers = ChildLayers { landlock: landlock_child, seccomp: seccomp_child };
    let prepared = Prepared {
        v,
        ident,
        proxy_mode,
        proxy_prep,
        instance,
        cg,
        nftp,
        landlock_note,
        seccomp_note,
        mediation,
        env,
        cwd,
        cwd_asked,
        command_path,
        host_net,
        forwarded,
        force_no_userns,
        premade_netns,
        nft_layer,
        host_load,
    };
    Ok((prepared, layers))
}

/// Variables the agent gets from the supervisor's environment without asking: what
/// programs need to speak the user's locale and draw on the terminal. Everything else
/// (tokens, cloud credentials, SSH agent sockets, the operator's `PATH` with its
/// `~/.cargo`, `~/.pyenv` entries) stays outside unless a `--env` names it.
const PASSED_BY_DEFAULT: &[&str] = &["LANG", "LANGUAGE", "TERM", "COLORTERM", "NO_COLOR", "TZ"];

/// The agent's environment: the default set, `LC_*`, `HOME=/tmp` (its private, writable
/// /tmp; the host home is not in the sandbox), `PATH` built from the policy's exec grants
/// ([`stage::exec::default_path`]), and each `--env NAME[=VALUE]` (which may set `PATH`).
fn agent_environment(extra: &[String], path: String) -> Result<Vec<(String, String)>, RunError> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| PASSED_BY_DEFAULT.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    env.insert("HOME".into(), "/tmp".into());
    env.insert("PATH".into(), path);
    for e in extra {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => return Err(RunError::Refused(format!("--env {e}: not set in this environment"))),
            },
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(RunError::Refused(format!("--env {e}: `{k}` is not a variable name")));
        }
        env.insert(k, v);
    }
    Ok(env.into_iter().collect())
}

