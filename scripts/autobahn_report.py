"""Reads an Autobahn|Testsuite index.json; exits 1 if any case failed.

A case fails when its `behavior` or `behaviorClose` is FAILED, WRONG CODE,
UNCLEAN or NO_CLOSE. OK, NON-STRICT, INFORMATIONAL and UNIMPLEMENTED pass.
"""
import collections
import json
import sys

BAD = {"FAILED", "WRONG CODE", "UNCLEAN", "NO_CLOSE"}


def verdict(index):
    counts = collections.Counter()
    failures = []
    for agent, cases in index.items():
        for case, result in cases.items():
            counts[result["behavior"]] += 1
            bad = {result["behavior"], result["behaviorClose"]} & BAD
            if bad:
                failures.append(f"{agent} case {case}: {result['behavior']} / close {result['behaviorClose']}")
    return counts, failures


def main(path):
    with open(path) as f:
        index = json.load(f)
    counts, failures = verdict(index)
    if not counts:
        print(f"autobahn: no cases in {path}")
        return 1
    print("autobahn: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for line in failures:
        print("  " + line)
    print(f"autobahn: {len(failures)} failing case(s) of {sum(counts.values())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
