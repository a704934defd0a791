#!/usr/bin/env bash
# Cost of the file helper's mediation (docs/mediation.md "Files"): create+close and unlink of
# N files, in the workspace root (mediated: the helper makes the entries), in a directory
# that existed at launch (CONTINUE after the helper's look) and in the private /tmp
# (CONTINUE), against the same policy with `protect = false` (no notification at all), in
# the same run. Needs root. The workspace is a tmpfs so that the file system does not
# dominate. Prints one JSON line per run (microseconds per call, best of 5 repetitions).
#
#   runtime/bench/fs_mediation.sh [N]     # default N = 3000; 3 runs of each bundle
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p aegis-runtime -p aegis-compiler
BIN=$CARGO_TARGET_DIR/release
N=${1:-3000}
W=$(mktemp -d /var/tmp/aegis-fsbench.XXXXXX)
trap 'umount "$W/ws" 2>/dev/null || true; rm -rf "$W"' EXIT
"$BIN/aegisc" keygen -o "$W/k" >/dev/null
"$BIN/aegisc" build "$ROOT/runtime/bench/fs-mediation.toml" -o "$W/mediated" --sign-key "$W/k.key" >/dev/null
sed 's/^write = \["${WORKSPACE}"\]$/&\nprotect = false/' "$ROOT/runtime/bench/fs-mediation.toml" > "$W/plain.toml"
"$BIN/aegisc" build "$W/plain.toml" -o "$W/plain" --sign-key "$W/k.key" >/dev/null 2>&1
mkdir -p "$W/ws" && mount -t tmpfs -o size=128m tmpfs "$W/ws"
mkdir -p "$W/ws/src" && chown -R 65534:65534 "$W/ws"
export AEGIS_STATE_DIR="$W/state"
SCRIPT='
import json, os, sys, time
W, N = sys.argv[1], int(sys.argv[2])
out = {}
for name, where in [("workspace root (helper)", W), ("existing dir (continue)", W + "/src"), ("/tmp (continue)", "/tmp")]:
    best = None
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for i in range(N):
            os.close(os.open(f"{where}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        t1 = time.perf_counter_ns()
        for i in range(N):
            os.unlink(f"{where}/f{i}")
        t2 = time.perf_counter_ns()
        r = ((t1 - t0) / N / 1000, (t2 - t1) / N / 1000)
        best = r if best is None or sum(r) < sum(best) else best
    out[name] = {"create_us": round(best[0], 1), "unlink_us": round(best[1], 1)}
print(json.dumps(out))
'
uptime
for run in 1 2 3; do
  for b in plain mediated; do
    printf '%-9s ' "$b"
    "$BIN/aegis-exec" --trust-key "$W/k.pub" --param "WORKSPACE=$W/ws" "$W/$b" -- /usr/bin/python3 -c "$SCRIPT" "$W/ws" "$N" | tail -1
  done
done
uptime
