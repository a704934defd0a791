#!/usr/bin/env bash
# Launch overhead of `aegis-exec` running /usr/bin/true under every layer, against bwrap in
# the same run. Needs root (cgroups, nftables), hyperfine, bwrap, nft.
#
#   runtime/bench/launch.sh            # hyperfine table + one verbose run per bundle
#
# Bundles: bench-none (own netns + in-namespace nftables table, cgroup, mount plan,
# Landlock, seccomp, signature check) and data-analyst (host network: nftables table in the
# host namespace matched to the agent's cgroup2 leaf). Per-stage costs come from
# `aegis-exec --verbose` (supervisor and child stage timings).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p aegis-runtime -p aegis-compiler
BIN=$CARGO_TARGET_DIR/release
W=$(mktemp -d /tmp/aegis-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
"$BIN/aegisc" keygen -o "$W/k" >/dev/null
"$BIN/aegisc" build "$ROOT/runtime/bench/bench-none.toml" -o "$W/none" --sign-key "$W/k.key" >/dev/null
"$BIN/aegisc" build "$ROOT/policies/data-analyst.toml" -o "$W/host" --sign-key "$W/k.key" >/dev/null
mkdir -p "$W/data" "$W/out" && chmod 777 "$W/data" "$W/out"
export AEGIS_STATE_DIR="$W/state"
EXEC="$BIN/aegis-exec --trust-key $W/k.pub"
HOSTP="--param DATASET=$W/data --param OUTPUT=$W/out"

echo "== per-stage timings (one run each, release build)"
$EXEC --verbose "$W/none" -- /usr/bin/true 2>&1 | sed -n '/stage timings/,$p'
$EXEC --verbose $HOSTP "$W/host" -- /usr/bin/python3 -c pass 2>&1 | sed -n '/stage timings/,$p'

echo "== hyperfine"
hyperfine -N --warmup 20 ${HYPERFINE_ARGS:-} \
  -n bwrap "bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc /bin/true" \
  -n "aegis-exec none (all layers)" "$EXEC $W/none -- /usr/bin/true" \
  -n "aegis-exec none + audit log" "$EXEC --audit-log $W/audit.log $W/none -- /usr/bin/true" \
  -n "aegis-exec host-mode nftables" "$EXEC $HOSTP $W/host -- /usr/bin/python3 -c pass" \
  -n "python3 -c pass (bare)" "/usr/bin/python3 -c pass"
