#!/usr/bin/env python3
"""Self cost per function of a callgrind profile, or the difference between two.

    bench/cgdiff.py PROFILE                 # the functions with the most instructions of their own
    bench/cgdiff.py BEFORE AFTER            # what moved between two profiles, largest first

PROFILE is a `cg.out.1` that bench/callgrind.sh left (its last line names the directory).
Written because this machine's callgrind_annotate (valgrind 3.19) attributes every instruction of
these profiles to `clone`; this reads the file format itself (names compressed as `fn=(id) name`
and `cfn=(id) name`, the cost line after `calls=` being the callee's inclusive cost, which is not
the caller's own)."""
import collections
import re
import sys

NAME = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")


def self_costs(path: str) -> collections.Counter:
    names: dict[str, str] = {}
    by_id: collections.Counter = collections.Counter()
    fn = None
    after_call = False
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith(("fn=", "cfn=")):
                m = NAME.match(line.rstrip("\n"))
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    if line.startswith("fn="):
                        fn = m.group(1)
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    if after_call:
                        after_call = False
                    else:
                        by_id[fn] += int(parts[1])
    out: collections.Counter = collections.Counter()
    for k, v in by_id.items():
        out[names.get(k, k)] += v
    return out


def main() -> None:
    if len(sys.argv) == 2:
        c = self_costs(sys.argv[1])
        total = sum(c.values())
        print(f"{total:,} instructions")
        for name, v in c.most_common(30):
            print(f"{v:>14,} {100 * v / total:5.1f}%  {name[:140]}")
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = self_costs(sys.argv[1]), self_costs(sys.argv[2])
    print(f"total {sum(a.values()):,} -> {sum(b.values()):,}")
    moved = {k: b[k] - a[k] for k in set(a) | set(b)}
    for name, d in sorted(moved.items(), key=lambda kv: -abs(kv[1]))[:30]:
        print(f"{d:>+14,} {a[name]:>14,} {b[name]:>14,}  {name[:120]}")


if __name__ == "__main__":
    main()
