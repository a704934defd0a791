#!/usr/bin/env bash
# Launch overhead of `aegis-exec` running /usr/bin/true under every layer, against bwrap in
# the same run. Run as root (cgroups, nftables, and it switches to BENCH_USER for the rootless
# half); needs hyperfine, bwrap, nft, setpriv.
#
#   runtime/bench/launch.sh            # per-stage medians + hyperfine table
#   BENCH_USER=1000 RUNS=30 runtime/bench/launch.sh
#
# Bundles: bench-none (own netns + in-namespace nftables table, cgroup, mount plan,
# Landlock, seccomp, signature check); the same for an unprivileged user (BENCH_USER, default
# 1000: every layer a user can have; cgroup best-effort, since a user has no delegated
# cgroup here), against bwrap run by the same user; and data-analyst (host network:
# nftables table in the host namespace matched to the agent's cgroup2 leaf). Per-stage
# costs come from `aegis-exec --verbose` (supervisor and child stage timings). State the
# machine's load (`uptime`, printed first) with the numbers.
set -euo pipefail
uptime
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
U=${BENCH_USER:-1000}
AS_USER="setpriv --reuid=$U --regid=$U --init-groups"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p aegis-runtime -p aegis-compiler
BIN=$CARGO_TARGET_DIR/release
W=$(mktemp -d /tmp/aegis-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
"$BIN/aegisc" keygen -o "$W/k" >/dev/null
"$BIN/aegisc" build "$ROOT/runtime/bench/bench-none.toml" -o "$W/none" --sign-key "$W/k.key" >/dev/null 2>&1
"$BIN/aegisc" build "$ROOT/policies/data-analyst.toml" -o "$W/host" --sign-key "$W/k.key" >/dev/null 2>&1
# The user's bundle: bench-none with its cgroup layer best-effort.
printf 'version = 1\n[agent]\nname = "bench-none"\nextends = ["%s"]\n[enforcement]\ncgroup = "best-effort"\n' \
  "$ROOT/runtime/bench/bench-none.toml" > "$W/user.toml"
"$BIN/aegisc" build "$W/user.toml" -o "$W/none-user" --sign-key "$W/k.key" >/dev/null 2>&1
mkdir -p "$W/state-user" && chown "$U:$U" "$W/state-user"
mkdir -p "$W/data" "$W/out" && chmod 777 "$W/data" "$W/out"
export AEGIS_STATE_DIR="$W/state"
EXEC="$BIN/aegis-exec --trust-key $W/k.pub"
HOSTP="--param DATASET=$W/data --param OUTPUT=$W/out"

# Median of each stage over N verbose runs (the machine may be noisy; medians are robust).
stage_medians() {
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" 2>&1 >/dev/null | sed -n '/stage timings/,/agent exited/p'; done |
    /usr/bin/python3 -c '
import sys, statistics, collections
v = collections.OrderedDict()
for line in sys.stdin:
    p = line.split()
    if len(p) == 3 and p[0] in ("supervisor", "child"):
        v.setdefault(p[0] + " " + p[1], []).append(float(p[2]))
for k, xs in v.items():
    print(f"  {k:<40} {statistics.median(xs):9.1f} us (median of {len(xs)})")
'
}
echo "== per-stage timings, release build, median of ${RUNS:-30} runs"
echo "-- bench-none (own netns, table loaded into it while the child mounts)"
stage_medians "${RUNS:-30}" $EXEC --verbose "$W/none" -- /usr/bin/true
echo "-- bench-none as uid $U (own netns, nft in the agent's user+net namespaces, no cgroup)"
stage_medians "${RUNS:-30}" $AS_USER env AEGIS_STATE_DIR="$W/state-user" $EXEC --verbose "$W/none-user" -- /usr/bin/true
echo "-- data-analyst (host network: table + cgroup dispatch rule in the host namespace)"
stage_medians "${RUNS:-30}" $EXEC --verbose $HOSTP "$W/host" -- /usr/bin/python3 -c pass

echo "== hyperfine"
hyperfine -N --warmup 20 ${HYPERFINE_ARGS:-} \
  -n bwrap "bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc /usr/bin/true" \
  -n "bwrap (uid $U)" "$AS_USER bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc /usr/bin/true" \
  -n "aegis-exec none, uid $U (every layer a user can have)" "$AS_USER env AEGIS_STATE_DIR=$W/state-user $EXEC $W/none-user -- /usr/bin/true" \
  -n "aegis-exec none (all layers)" "$EXEC $W/none -- /usr/bin/true" \
  -n "aegis-exec none + audit log" "$EXEC --audit-log $W/audit.log $W/none -- /usr/bin/true" \
  -n "aegis-exec host-mode nftables" "$EXEC $HOSTP $W/host -- /usr/bin/python3 -c pass" \
  -n "python3 -c pass (bare)" "/usr/bin/python3 -c pass" \
  -n "nft load alone (unshare -n nft -j -f none/nftables.json)" "unshare -n nft -j -f $W/none/nftables.json"
