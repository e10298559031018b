#!/usr/bin/env python3
"""lat-phases.py LATLOG B0 B1 M0 M1 A0 A1 G0 G1: the guest's view of one move under load.

LATLOG is fio's per-I/O total-latency log (--write_lat_log with --log_avg_msec=0 and
--log_unix_epoch=1: one line per completed I/O, "completion time in ms since the epoch,
latency in ns, direction, size, offset"). The other arguments are host times in seconds
since the epoch: the window before the move [B0, B1), during it [M0, M1), after it [A0, A1),
and the window around the switchover [G0, G1) in which the longest gap between two
consecutive completions is measured (the pause the guest feels; fio logs in whole
milliseconds, so a gap is known to +-1 ms).

Prints one line: iops_before p50_before p99_before iops_during p50_during p99_during
iops_after p50_after p99_after gap_ms (latencies in ms). Exit 1 if a window has no I/O.
"""
import statistics
import sys


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def main():
    if len(sys.argv) != 10:
        sys.exit(__doc__)
    path = sys.argv[1]
    b0, b1, m0, m1, a0, a1, g0, g1 = (float(x) * 1000 for x in sys.argv[2:])
    done = []                                   # (completion ms, latency ms)
    for line in open(path):
        f = line.split(",")
        if len(f) >= 3 and f[2].strip() == "1":  # writes
            done.append((int(f[0]), int(f[1]) / 1e6))
    done.sort()
    out = []
    for lo, hi, name in ((b0, b1, "before"), (m0, m1, "during"), (a0, a1, "after")):
        lat = [l for t, l in done if lo <= t < hi]
        if not lat:
            sys.exit(f"lat-phases: no completed write {name} the move ({path})")
        out += [len(lat) / ((hi - lo) / 1000), statistics.median(lat), pct(lat, 99)]
    times = [t for t, _ in done if g0 <= t < g1]
    if len(times) < 2:
        sys.exit(f"lat-phases: fewer than 2 completions around the switchover ({path})")
    gap = max(b - a for a, b in zip(times, times[1:]))
    print(" ".join(f"{x:.3f}" for x in out + [gap]))


if __name__ == "__main__":
    main()
