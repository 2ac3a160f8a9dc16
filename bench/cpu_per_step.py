#!/usr/bin/env python3
"""CPU time per timed step of `smlt-bench aggregate`, by what it was spent on.

Runs the benchmark twice under `perf record -a` (all CPUs, 999 samples per second per CPU),
with --steps SHORT and --steps LONG and otherwise the same arguments, and divides the
difference of each category's samples by LONG - SHORT: start-up (starting the servers, building
the known gradients) is the same in both runs and drops out. Needs perf and root (or a
perf_event_paranoid that allows system-wide sampling).

    python3 bench/cpu_per_step.py -- --only smlt
    python3 bench/cpu_per_step.py -- --codec bf16-shuffle-lz4
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

HZ = 999


def category(comm, dso, sym):
    kernel = dso == "[kernel.kallsyms]"
    if comm == "swapper":
        return "idle"
    if comm == "redis-server":
        return "redis-server, kernel" if kernel else "redis-server, user"
    if kernel:
        return "smlt-bench, kernel"
    if "crc32c" in sym:
        return "checksums"
    if "ctk_add_f32" in sym or "all_finite" in sym:
        return "sums"
    if "SGDMomentum" in sym or "commit" in sym:
        return "optimizer, commit"
    if "lz4" in dso.lower() or "LZ4" in sym:
        return "lz4"
    if "shuffle" in sym or "bf16" in sym or "f16" in sym or "feedback" in sym:
        return "conversion, shuffle"
    if "KnownGradient" in sym:
        return "bench gradients"
    return "smlt-bench, other user" if comm.startswith("smlt") else "other processes"


def samples(data):
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "comm,dso,sym", "-g", "none", "-n",
         "--percent-limit", "0"],
        capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("#") or len(parts) < 5:
            continue
        try:
            n = int(parts[1])
        except ValueError:
            continue
        counts[category(parts[2], parts[3], " ".join(parts[5:]))] += n
    return counts


def run(bench, args, steps, directory):
    data = os.path.join(directory, f"perf-{steps}.data")
    result = subprocess.run(
        ["perf", "record", "-q", "-a", "-F", str(HZ), "-o", data, "--", bench, "aggregate", *args,
         "--steps", str(steps), "--json"],
        capture_output=True, text=True, check=True)
    rows = json.loads(result.stdout)
    return samples(data), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default=".build/release/smlt-bench")
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=100)
    parser.add_argument("args", nargs="*", help="smlt-bench aggregate arguments (after --)")
    a = parser.parse_args()
    if a.long <= a.short:
        sys.exit("--long must be more than --short")
    with tempfile.TemporaryDirectory() as directory:
        short, _ = run(a.bench, a.args, a.short, directory)
        long, rows = run(a.bench, a.args, a.long, directory)
    steps = a.long - a.short
    for r in rows:
        print(f"{r['method']} {r['codec']}: median step {r['step_seconds_median'] * 1e3:.1f} ms "
              f"(run of {a.long} steps)")
    per_step = {k: (long[k] - short[k]) / steps / HZ * 1e3 for k in set(long) | set(short)}
    print(f"CPU per step, all processes ({steps} steps: {a.long} - {a.short}):")
    for k, ms in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {k:24s} {ms:7.1f} ms")
    print(f"  {'total':24s} {sum(per_step.values()):7.1f} ms")


if __name__ == "__main__":
    main()
