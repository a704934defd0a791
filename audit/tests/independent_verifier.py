#!/usr/bin/env python3
"""An independent verifier of the AEGIS audit log, written only from docs/audit.md.

Usage: independent_verifier.py LOG [PUBKEY]
Checks the chain (sections 2-3), the Merkle tree head and frontier of every checkpoint
(sections 5-6.1) and, with PUBKEY and the `minisign` tool, every checkpoint signature (6.2).
Prints "OK <records> <root hex>" or "FAIL line <n> offset <o>: <why>" and exits 0 or 1.
"""
import hashlib, json, os, re, subprocess, sys, tempfile

DOMAIN = b"aegis-audit-v1\x00"
TS = re.compile(rb"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")
TOKEN = re.compile(r"^[A-Za-z0-9._:-]+$")


def sha(b):
    return hashlib.sha256(b).digest()


def mth(leaves):
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def frontier(leaves):
    out, start, n = [], 0, len(leaves)
    for bit in reversed(range(64)):
        size = 1 << bit
        if n & size:
            out.append(mth(leaves[start:start + size]))
            start += size
    return out


def check_sig(pub, body, sig, gsig):
    with tempfile.TemporaryDirectory() as d:
        m, x = os.path.join(d, "body"), os.path.join(d, "body.minisig")
        open(m, "w").write(body)
        open(x, "w").write(f"untrusted comment: aegis-audit checkpoint\n{sig}\ntrusted comment: {body}\n{gsig}\n")
        r = subprocess.run(["minisign", "-Vq", "-m", m, "-x", x, "-p", pub], capture_output=True)
        return r.returncode == 0


def main():
    log = open(sys.argv[1], "rb").read()
    pub = sys.argv[2] if len(sys.argv) > 2 else None
    prev, last_ts, offset, hashes, signed = b"\x00" * 32, b"", 0, [], 0
    lines = log.split(b"\n")
    if lines[-1] != b"":
        lines_complete, torn = lines[:-1], True
    else:
        lines_complete, torn = lines[:-1], False
    for i, line in enumerate(lines_complete):
        def fail(why):
            print(f"FAIL line {i + 1} offset {offset}: {why}")
            sys.exit(1)
        try:
            rec = json.loads(line)
        except ValueError as e:
            fail(f"not JSON: {e}")
        keys = ["v", "seq", "ts", "host", "boot", "agent", "bundle", "policy", "event", "prev"]
        if sorted(rec) != sorted(keys):
            fail("wrong fields")
        if rec["v"] != 1 or rec["seq"] != i:
            fail("bad version or seq")
        if rec["prev"] != prev.hex():
            fail("prev mismatch")
        ts = rec["ts"].encode()
        if not TS.match(ts) or ts < last_ts:
            fail("bad or decreasing ts")
        ev = rec["event"]
        if ev.get("kind") == "checkpoint":
            if ev["records"] != i or ev["bytes"] != offset:
                fail("checkpoint position")
            if ev["root"] != mth(hashes).hex() or ev["frontier"] != [h.hex() for h in frontier(hashes)]:
                fail("checkpoint root/frontier")
            if rec["agent"] or rec["bundle"] or rec["policy"] or not TOKEN.match(rec["host"]) or not TOKEN.match(rec["boot"]):
                fail("checkpoint header")
            if pub:
                body = (f"aegis-audit-checkpoint-v1 records={ev['records']} bytes={ev['bytes']} root={ev['root']}"
                        f" ts={rec['ts']} host={rec['host']} boot={rec['boot']}")
                if not check_sig(pub, body, ev["sig"], ev["global_sig"]):
                    fail("bad signature")
                signed += 1
        h = sha(DOMAIN + line)
        hashes.append(h)
        prev, last_ts, offset = h, ts, offset + len(line) + 1
    if torn:
        print(f"FAIL line {len(lines_complete) + 1} offset {offset}: torn tail")
        sys.exit(1)
    if pub and signed == 0:
        print("FAIL: no signed checkpoint")
        sys.exit(1)
    print(f"OK {len(hashes)} {mth(hashes).hex()}")


main()
