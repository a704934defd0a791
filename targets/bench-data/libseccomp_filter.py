#!/usr/bin/python3
"""Build libseccomp's BPF for a rule set (the comparison baseline for AEGIS's codegen).

usage: libseccomp_filter.py RULES.json OUT.bpf [OPTIMIZE]
RULES.json: {"default": [kind, data], "rules": [[name, [kind, data], [[index, op, value, mask], ...]], ...]}
kind: allow | errno | kill_process | kill_thread | log | trap | trace | notify
op:   eq | ne | lt | le | gt | ge | masked_eq (mask used only for masked_eq)
OPTIMIZE: libseccomp SCMP_FLTATR_CTL_OPTIMIZE (1 = priority/sorted list, 2 = binary tree).
The filter is for the native architecture only (as Docker/runc build it per host).
Writes the raw struct sock_filter array, and prints the names libseccomp could not resolve.
"""
import json
import sys

import seccomp as s


def action(a):
    kind, data = a
    return {
        "allow": s.ALLOW,
        "errno": s.ERRNO(data) if kind == "errno" else None,
        "kill_process": s.KILL_PROCESS,
        "kill_thread": s.KILL,
        "log": s.LOG,
        "trap": s.TRAP,
        "trace": s.TRACE(data) if kind == "trace" else None,
        "notify": s.NOTIFY,
    }[kind]


OPS = {"eq": s.EQ, "ne": s.NE, "lt": s.LT, "le": s.LE, "gt": s.GT, "ge": s.GE, "masked_eq": s.MASKED_EQ}


def main():
    spec = json.load(open(sys.argv[1]))
    f = s.SyscallFilter(defaction=action(spec["default"]))
    if len(sys.argv) > 3:
        f.set_attr(s.Attr.CTL_OPTIMIZE, int(sys.argv[3]))
    unresolved = []
    for name, act, conds in spec["rules"]:
        args = []
        for index, op, value, mask in conds:
            if op == "masked_eq":
                args.append(s.Arg(index, s.MASKED_EQ, mask, value))
            else:
                args.append(s.Arg(index, OPS[op], value))
        try:
            f.add_rule(action(act), name, *args)
        except (RuntimeError, ValueError) as e:
            unresolved.append("%s (%s)" % (name, e))
    with open(sys.argv[2], "wb") as out:
        f.export_bpf(out)
    for u in unresolved:
        print(u)


main()
