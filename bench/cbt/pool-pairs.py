#!/usr/bin/env python3
# Pool the paired CBT costs of several bench/cbt.sh (or bench/nbd.sh CBT_ONLY=1) logs: each
# round's svmd (or svmd-cold) figure against the same round's svm-nbd-serve, per cell, from
# the logs' "round N: SERVER CELL: IOPS, p99" lines; prints the median cost and its sign-test
# interval (the k-th smallest to the k-th largest, coverage >= 95%; bench/README.md
# convention 5). More rounds narrow the interval; on a noisy machine one run's 15 may not.
# Usage: bench/cbt/pool-pairs.py LOG [LOG ...]
import re, sys, collections, statistics
from math import comb
def ci(n, want=0.95):
    cov = lambda k: 1 - 2 * sum(comb(n, j) for j in range(k)) / 2 ** n
    k = 1
    while k + 1 <= n // 2 and cov(k + 1) >= want:
        k += 1
    return k, cov(k)
pairs = collections.defaultdict(list)
if len(sys.argv) < 2:
    sys.exit("usage: bench/cbt/pool-pairs.py LOG [LOG ...] (bench/cbt.sh's output)")
for f in sys.argv[1:]:
    runs = collections.defaultdict(dict)
    for l in open(f):
        m = re.match(r'bench/nbd: round (\d+): (\S+) (randwrite-4k-qd\d+): (\d+) IOPS, p99 ([\d.]+) us', l)
        if m:
            r, s, c, i, p = m.groups()
            runs[(c, int(r))][s] = (float(i), float(p))
    for (c, r), d in runs.items():
        b = d.get("svm-nbd-serve")
        for s in ("svmd", "svmd-cold"):
            if b and s in d:
                pairs[(c, s)].append(((1 - d[s][0] / b[0]) * 100, (d[s][1] / b[1] - 1) * 100))
if not pairs:
    sys.exit("no paired rounds in " + " ".join(sys.argv[1:]))
print(f"{'cell':18} {'server':10} {'pairs':>5} {'IOPS cost: median (95% CI)':>30} {'p99 cost: median (95% CI)':>30}")
for (c, s), v in sorted(pairs.items()):
    n = len(v)
    if n < 2:
        continue
    k, cov = ci(n)
    out = []
    for j in (0, 1):
        x = sorted(p[j] for p in v)
        out.append(f"{statistics.median(x):+5.1f}% ({x[k-1]:+5.1f}..{x[-k]:+5.1f})")
    print(f"{c:18} {s:10} {n:5} {out[0]:>30} {out[1]:>30}   coverage {cov*100:.1f}%")
