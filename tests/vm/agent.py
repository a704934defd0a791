# Runs inside the sandbox in the nested guest (tests/vm/guest.sh passes it with `python3 -c`,
# argv: WORK DATA). Each probe is a real attempt; prints one JSON object: "ok" or the errno
# name per probe, plus who and where the agent is.
import errno
import json
import os
import socket
import sys

work, data = sys.argv[1], sys.argv[2]


def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


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


def tcp(host, port):
    with socket.create_connection((host, port), timeout=5):
        pass


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.close()


def proxy():
    # The egress proxy's answer to a CONNECT the policy does not grant: "http <status>".
    url = os.environ.get("HTTPS_PROXY", "")
    if not url:
        return "no proxy"
    host, port = url.split("//")[-1].rstrip("/").rsplit(":", 1)
    answer = []

    def ask():
        with socket.create_connection((host, int(port)), timeout=30) as c:
            c.sendall(b"CONNECT not-granted.example:443 HTTP/1.1\r\nHost: not-granted.example:443\r\n\r\n")
            answer.extend(c.makefile("rb").readline().decode(errors="replace").split())

    got = attempt(ask)
    return got if got != "ok" else "http " + (answer[1] if len(answer) > 1 else "?")


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
    # guest.sh listens on the guest's own 127.0.0.1:47801 (granted to vm-host only) and 47802.
    "tcp_granted": attempt(lambda: tcp("127.0.0.1", 47801)),
    "tcp_other": attempt(lambda: tcp("127.0.0.1", 47802)),
    "udp_socket": attempt(udp),
    "proxy": proxy(),
}
print(json.dumps(out, sort_keys=True))
