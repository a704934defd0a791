#!/bin/sh
# One question asked the ways a framework can ask it, as processes (what a tool that shells
# out pays): `aegisc check` (compiles the policy every time) vs the `aegis` client (one
# connection to a running aegisd). Needs hyperfine. Run from the repository root:
#   daemon/bench/compare.sh
set -eu
cargo build -q --release -p aegis-compiler -p aegis-daemon -p aegis-cli
bin=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
"$bin/aegisd" --socket "$dir/s" --no-audit-log 2>/dev/null & pid=$!
while [ ! -S "$dir/s" ]; do sleep 0.01; done
"$bin/aegis" --socket "$dir/s" register policies/inbox-manager.toml
q='gmail POST /gmail/v1/users/me/messages/send'
hyperfine -N -w 20 -i \
  "$bin/aegisc check policies/inbox-manager.toml api $q" \
  "$bin/aegis --socket $dir/s check-api inbox-manager $q"
