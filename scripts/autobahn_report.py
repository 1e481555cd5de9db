"""Verdict on an Autobahn|Testsuite fuzzingclient report.

    python3 scripts/autobahn_report.py reports/autobahn/reports/server/index.json

index.json is {agent: {case: {"behavior": ..., "behaviorClose": ..., ...}}}.
A case fails when its `behavior` or its `behaviorClose` is FAILED, FAILED BY
CLIENT (the client had to drop a connection the server should have
closed), WRONG CODE, UNCLEAN or NO_CLOSE, or its `behavior` is UNIMPLEMENTED (the server answers
the compression cases 12.* and 13.* since permessage-deflate: a server that
stops negotiating it fails here); OK, NON-STRICT and INFORMATIONAL pass.
Prints the number of cases per behavior (e.g. `OK 296, NON-STRICT 2, ...`)
and every failing case; exits 1 if any case failed, if the report holds no
case at all, or if it cannot be read (wstest's own exit code is always 0).

Standard library only, so it runs with any python3. Checked by
tests/python/test_autobahn_report.py.
"""
import json
import os
import sys
from collections import Counter

BAD = ("FAILED", "FAILED BY CLIENT", "WRONG CODE", "UNCLEAN", "NO_CLOSE", "UNIMPLEMENTED")
# Order of the summary; anything unexpected follows, alphabetically.
ORDER = ("OK", "NON-STRICT", "INFORMATIONAL") + BAD


def case_key(case):
    """Sorts "1.1.2" before "1.1.10" and "12.1.1" after "9.8.1"."""
    return tuple(int(p) if p.isdigit() else 0 for p in case.split("."))


def verdict(index):
    """Returns (counts per behavior, failing cases as readable lines)."""
    counts = Counter()
    failures = []
    for agent in sorted(index):
        cases = index[agent]
        for case in sorted(cases, key=case_key):
            result = cases[case]
            behavior = result.get("behavior", "MISSING")
            close = result.get("behaviorClose", "MISSING")
            counts[behavior] += 1
            if behavior in BAD or close in BAD or "MISSING" in (behavior, close):
                failures.append(f"{agent} case {case}: behavior {behavior}, behaviorClose {close}")
    return counts, failures


def format_counts(counts):
    known = [b for b in ORDER if counts[b]]
    other = sorted(b for b in counts if b not in ORDER)
    return ", ".join(f"{b} {counts[b]}" for b in known + other)


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} reports/.../index.json", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn: cannot read {path}: {e}")
        return 1
    counts, failures = verdict(index)
    total = sum(counts.values())
    if total == 0:
        print(f"autobahn: no cases in {path}")
        return 1
    print(f"autobahn: {total} cases: {format_counts(counts)}")
    if failures:
        print(f"autobahn: {len(failures)} failing case(s) (details in {os.path.join(os.path.dirname(path), 'index.html')}):")
        for line in failures:
            print("  " + line)
        return 1
    print("autobahn: no failing case")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
