#!/bin/bash
# Runs as root inside the nested guest that tests/vm/main.rs boots (virtme-ng, this
# machine's filesystem over 9p, a pure cgroup2 hierarchy). It shapes the hierarchy like
# systemd's, then for each scenario (who runs aegis-exec, in which cgroup, with user
# namespaces allowed or blocked) runs `aegis-exec doctor` on the scenario's bundles and
# then the launch of tests/vm/agent.py under each, as that user in that cgroup, and prints
# one line per result for the host to check (TCG is slow: one doctor run per scenario):
#   AEGISVM|info|<key>|<value>        (t:<scenario>:<bundle or doctor>|<seconds it took>)
#   AEGISVM|<scenario>|*|doctor|<exit code>|<stdout, hex>
#   AEGISVM|<scenario>|<bundle>|launch|<exit code>|<stdout, hex>|<stderr, hex>
# Usage: guest.sh BIN_DIR BUNDLES_DIR AGENT_PY SCENARIO=BUNDLE[,BUNDLE...]...
# Scenarios: {root,user-scope,user-terminal,user-session}-{userns,nouserns}.
set -u
BIN=$1 BUNDLES=$2 AGENT=$3
shift 3
CG=/sys/fs/cgroup
U=$CG/user.slice/user-1000.slice/user@1000.service
CTRL="+cpu +io +memory +pids"
hex() { od -An -v -tx1 | tr -d ' \n'; }
info() { printf 'AEGISVM|info|%s|%s\n' "$1" "$2"; }
# The guest's uptime in centiseconds (a builtin read: no process to time).
uptime_cs() { local up _; read -r up _ < /proc/uptime; up=${up/./}; echo $((10#$up)); }
# elapsed SINCE_CS: seconds since, with two decimals.
elapsed() { local d=$(( $(uptime_cs) - $1 )); printf '%d.%02d' $((d / 100)) $((d % 100)); }
info t:boot "$(elapsed 0)"

# Owned by uid 1000 the way systemd delegates a unit: the directory and its delegation files.
delegate() {
  chown 1000:1000 "$1" "$1/cgroup.procs" "$1/cgroup.subtree_control" "$1/cgroup.threads"
}

# systemd's shape: controllers enabled down to user@1000.service, which is delegated to the
# user; its manager sits in init.scope; app.slice holds the user's scopes.
echo "$CTRL" > $CG/cgroup.subtree_control
mkdir -p $U/init.scope $U/app.slice $CG/user.slice/user-1000.slice/session-1.scope $CG/system.slice
echo "$CTRL" > $CG/user.slice/cgroup.subtree_control
echo "$CTRL" > $CG/user.slice/user-1000.slice/cgroup.subtree_control
sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > $U/init.scope/cgroup.procs
delegate $U
echo "$CTRL" > $U/cgroup.subtree_control
delegate $U/app.slice
echo "$CTRL" > $U/app.slice/cgroup.subtree_control
echo $$ > $CG/system.slice/cgroup.procs

DATA=/var/tmp/vm-data
mkdir -p $DATA/secret
echo readable > $DATA/ro.txt && chmod 0666 $DATA/ro.txt
echo hidden > $DATA/secret/key
STATE=/var/tmp/vm-state  # one serial store per user
mkdir -p $STATE-root $STATE-user && chown 1000:1000 $STATE-user
# Listeners on the guest's own loopback for agent.py's egress probes: 47801 is what vm-host
# grants, 47802 is granted to no one.
/usr/bin/python3 -c '
import socket, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        s.accept()[0].close()
threading.Thread(target=serve, args=(47802,), daemon=True).start()
serve(47801)' </dev/null >/dev/null 2>&1 &
MAXNS=$(cat /proc/sys/user/max_user_namespaces)
info kernel "$(uname -r)"
info cgroup "$(cat $CG/cgroup.controllers)"

# run_as SCENARIO COMMAND...: runs COMMAND as the scenario's user in the scenario's cgroup
# (a fresh scope per command, as systemd-run gives; runs in a command substitution, so
# $BASHPID names it).
run_as() {
  local scenario=$1; shift
  local who cg
  case $scenario in
    root-*) who=root; cg=$CG/system.slice ;;
    user-scope-*)  # a delegated scope of its own: systemd-run --user --scope -p Delegate=yes
      who=user; cg=$U/app.slice/run-$BASHPID.scope; mkdir $cg; delegate $cg ;;
    user-terminal-*)  # a user-owned scope shared with another process (a terminal)
      who=user; cg=$U/app.slice/term-$BASHPID.scope; mkdir $cg; delegate $cg
      sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > $cg/cgroup.procs ;;
    user-session-*)  # a login session: root-owned, not delegated
      who=user; cg=$CG/user.slice/user-1000.slice/session-1.scope ;;
  esac
  if [ $who = root ]; then
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" env AEGIS_STATE_DIR=$STATE-root "$@"
  else
    sh -c 'echo $$ > "$0/cgroup.procs" && exec setpriv --reuid=1000 --regid=1000 --clear-groups "$@"' "$cg" \
      env AEGIS_STATE_DIR=$STATE-user HOME=/tmp "$@"
  fi
}

n=0
for arg in "$@"; do
  scenario=${arg%%=*}
  IFS=, read -ra names <<< "${arg#*=}"
  case $scenario in
    *-nouserns) sysctl -qw user.max_user_namespaces=0; sysctl -qw kernel.unprivileged_userns_clone=0 2>/dev/null ;;
    *) sysctl -qw user.max_user_namespaces=$MAXNS; sysctl -qw kernel.unprivileged_userns_clone=1 2>/dev/null ;;
  esac
  dirs=()
  for name in "${names[@]}"; do dirs+=("$BUNDLES/$name"); done
  t=$(uptime_cs)
  out=$(run_as $scenario $BIN/aegis-exec doctor "${dirs[@]}" 2>&1); code=$?
  info "t:$scenario:doctor" "$(elapsed $t)"
  printf 'AEGISVM|%s|*|doctor|%s|%s\n' $scenario $code "$(printf '%s' "$out" | hex)"
  for name in "${names[@]}"; do
    b=$BUNDLES/$name; n=$((n + 1))
    W=$(mktemp -d /var/tmp/vm-work.XXXXXX); chmod 0777 $W
    errf=$(mktemp)
    t=$(uptime_cs)
    out=$(run_as $scenario $BIN/aegis-exec --allow-unsigned --verbose --param WORK=$W --param DATA=$DATA "$b" \
          -- /usr/bin/python3 -c "$(cat $AGENT)" $W $DATA 2>$errf); code=$?
    info "t:$scenario:$name" "$(elapsed $t)"
    printf 'AEGISVM|%s|%s|launch|%s|%s|%s\n' $scenario $name $code "$(printf '%s' "$out" | hex)" "$(hex < $errf)"
    rm -rf $W $errf
    echo readable > $DATA/ro.txt
  done
done
info t:total "$(elapsed 0)"
info done "$n"
