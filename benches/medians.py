#!/usr/bin/env python3
"""Prints criterion's median throughput for every benchmark of a group, and each one's ratio to
the group's baseline measured in the same run.

Run after `cargo bench --bench NAME`:  python3 benches/medians.py GROUP BASELINE_FUNCTION
e.g. python3 benches/medians.py add_to_stream raw_unbounded_mpsc
"""
import json
import pathlib
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    group, baseline = sys.argv[1], sys.argv[2]
    root = pathlib.Path("target/criterion") / group
    if not root.is_dir():
        print(f"no results under {root}: run the benchmark first")
        return 1
    rows = {}
    found = [(e, e.parts[-4], e.parts[-3]) for e in root.glob("*/*/new/estimates.json")]
    found += [(e, e.parts[-3], "-") for e in root.glob("*/new/estimates.json")]
    for estimates, function, parameter in found:
        bench = json.loads((estimates.parent / "benchmark.json").read_text())
        elements = (bench.get("throughput") or {}).get("Elements")
        median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        rows[(parameter, function)] = (median_ns, elements)
    print(f"{'parameter':>10} {'function':>28} {'median':>12} {'elements/s':>14} {'vs ' + baseline:>22}")
    for (parameter, function) in sorted(rows, key=lambda k: (float(k[0]) if k[0].replace('.', '').isdigit() else k[0], k[1])):
        median_ns, elements = rows[(parameter, function)]
        rate = elements / median_ns * 1e9 if elements else float("nan")
        base = rows.get((parameter, baseline))
        ratio = base[0] / median_ns if base else float("nan")
        print(f"{parameter:>10} {function:>28} {median_ns / 1e6:>10.2f}ms {rate:>14,.0f} {ratio:>21.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
