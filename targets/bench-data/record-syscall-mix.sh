#!/bin/sh
# Agent-like workload: Python reads files, git in a temp repo, HTTP to a local server.
set -e
W=$(mktemp -d)
cd "$W"
/usr/bin/python3 -m http.server 18765 --bind 127.0.0.1 >/dev/null 2>&1 &
SRV=$!
sleep 0.5
/usr/bin/python3 - <<'PY'
import os, hashlib
n = 0
for root, dirs, files in os.walk('/usr/lib/python3.11'):
    for f in files:
        p = os.path.join(root, f)
        try:
            with open(p, 'rb') as fh:
                hashlib.sha256(fh.read()).hexdigest()
            n += 1
        except OSError:
            pass
        if n > 400: break
    if n > 400: break
print(n)
PY
git init -q repo && cd repo
git config user.email a@b && git config user.name agent
for i in 1 2 3 4 5; do echo "line $i" >> f.txt; git add f.txt; git commit -qm "c$i"; done
git log --oneline >/dev/null
git status >/dev/null
git diff HEAD~2 >/dev/null
cd ..
/usr/bin/python3 -c "import urllib.request; [urllib.request.urlopen('http://127.0.0.1:18765/').read() for _ in range(20)]"
kill $SRV
cd /; rm -rf "$W"
