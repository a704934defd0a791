# Runs inside the sandbox in the nested guest (tests/vm/guest.sh passes it with `python3 -c`,
# argv: WORK DATA). Each probe is a real attempt; prints one JSON object: "ok" or the errno
# name per probe, plus who and where the agent is.
import errno
import json
import os
import sys

work, data = sys.argv[1], sys.argv[2]


def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def read(p):
    with open(p, "rb") as f:
        f.read(1)


def write(p):
    with open(p, "ab"):
        pass


def rename_across():
    os.makedirs(os.path.join(work, "a"), exist_ok=True)
    os.makedirs(os.path.join(work, "b"), exist_ok=True)
    write(os.path.join(work, "a", "f"))
    os.rename(os.path.join(work, "a", "f"), os.path.join(work, "b", "f"))


def forks(n):
    # Children that wait for a byte on a pipe: counts how many forks the pids limit allowed.
    r, w = os.pipe()
    made, refused = [], 0
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError:
            refused += 1
            continue
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        made.append(pid)
    os.close(w)
    os.close(r)
    for p in made:
        os.waitpid(p, 0)
    return refused


out = {
    "uid": os.getuid(),
    "cgroup": open("/proc/self/cgroup").read().strip(),
    "read_data": attempt(lambda: read(os.path.join(data, "ro.txt"))),
    "read_secret": attempt(lambda: read(os.path.join(data, "secret", "key"))),
    "read_shadow": attempt(lambda: read("/etc/shadow")),
    "read_passwd": attempt(lambda: read("/etc/passwd")),
    "write_work": attempt(lambda: write(os.path.join(work, "new.txt"))),
    "write_data": attempt(lambda: write(os.path.join(data, "ro.txt"))),
    "write_usr": attempt(lambda: write("/usr/aegis-vm")),
    "truncate_data": attempt(lambda: os.truncate(os.path.join(data, "ro.txt"), 0)),
    "rename_across": attempt(rename_across),
    "forks_refused_of_40": forks(40),
}
print(json.dumps(out, sort_keys=True))
