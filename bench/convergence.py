#!/usr/bin/env python3
"""Convergence of lossy gradient encodings: test accuracy at equal steps, and time to a target.

For each workload and each `--codec`, runs `smlt train ... --steps S --json` for every S of a grid
(same seed, so every run is a prefix of the longest: the parameters after S steps do not depend
on the total). Prints one JSON line per run and, at the end, a Markdown table:

- test accuracy after the last step of the grid ("equal steps");
- the first S of the grid whose test accuracy reaches the target, and the time to it: S times
  the seconds per step;
- seconds per step: the longest and the shortest run's wall seconds apart, over their steps apart
  (startup of the shards and servers, staging and evaluation cancel out).

Usage: bench/convergence.py [--smlt .build/release/smlt] [--workload digits|synthetic|all]
       [--codecs raw,bf16-shuffle-lz4,...] [--out results.jsonl]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKLOADS = {
    # 64 -> 64 -> 10: 4,810 parameters.
    "digits": dict(args=["--dataset", "digits", "--model", "mlp"], grid=[25, 50, 75, 100, 150, 200, 300],
                   target=0.95),
    # 16 -> 8192 -> 20: 303,124 parameters; 16 noisy features for 20 classes (Gaussian clusters),
    # so test accuracy levels off near 0.63, not 1.
    "synthetic": dict(args=["--dataset", "synthetic", "--model", "mlp", "--synthetic-features", "16",
                            "--synthetic-classes", "20", "--hidden", "8192", "--lr", "0.0005"],
                      grid=[10, 25, 50, 100, 200, 300], target=0.62),
}
COMMON = ["--workers", "4", "--shards", "2", "--seed", "1", "--json"]


def run(smlt, workload, codec, steps):
    args = [smlt, "train", *WORKLOADS[workload]["args"], *COMMON, "--codec", codec, "--steps", str(steps)]
    started = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "SMLT_DATA_DIR": str(REPO / "data")})
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stderr[-2000:]}")
    s = json.loads(r.stdout)
    return {"workload": workload, "codec": codec, "steps": steps, "test_accuracy": s["test_accuracy"],
            "test_loss": s.get("test_loss"), "wall_seconds": s.get("wall_seconds", time.monotonic() - started),
            "parameters": s["parameters"], "param_digest": s["param_digest"],
            "command": " ".join(["smlt", *args[1:]])}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smlt", default=str(REPO / ".build" / "release" / "smlt"))
    p.add_argument("--workload", default="all")
    p.add_argument("--codecs", default="raw,bf16-shuffle-lz4,topk:0.1,topk:0.01")
    p.add_argument("--target", type=float, action="append", default=[],
                   help="target accuracy per workload, in --workload order (default: the table's)")
    p.add_argument("--out")
    p.add_argument("--table", help="only print the table of the runs in this JSON-lines file")
    a = p.parse_args()
    if a.table:
        rows = [json.loads(line) for line in open(a.table) if line.strip()]
        print(table(rows, {}))
        return
    workloads = list(WORKLOADS) if a.workload == "all" else a.workload.split(",")
    rows = []
    out = open(a.out, "a") if a.out else None
    for w in workloads:
        for codec in a.codecs.split(","):
            for steps in WORKLOADS[w]["grid"]:
                row = run(a.smlt, w, codec, steps)
                rows.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()
    print()
    print(table(rows, dict(zip(workloads, a.target))))


def table(rows, targets):
    lines = ["| workload | codec | test accuracy at the last step | vs raw | target | steps to target | "
             "s to target (steps × s/step) | s/step |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for w in dict.fromkeys(r["workload"] for r in rows):
        mine = [r for r in rows if r["workload"] == w]
        last = max(r["steps"] for r in mine)
        raw = next((r["test_accuracy"] for r in mine if r["codec"] == "raw" and r["steps"] == last), None)
        target = targets.get(w) or WORKLOADS[w]["target"] or (raw - 0.01 if raw is not None else None)
        for codec in dict.fromkeys(r["codec"] for r in mine):
            runs = sorted((r for r in mine if r["codec"] == codec), key=lambda r: r["steps"])
            final = runs[-1]
            hit = next((r for r in runs if target is not None and r["test_accuracy"] >= target), None)
            per_step = ((runs[-1]["wall_seconds"] - runs[0]["wall_seconds"]) / (runs[-1]["steps"] - runs[0]["steps"])
                        if len(runs) > 1 else float("nan"))
            delta = "" if raw is None else f"{final['test_accuracy'] - raw:+.4f}"
            reached = f"{hit['steps']} | {hit['steps'] * per_step:.1f}" if hit else "not reached | -"
            lines.append(f"| {w} ({final['parameters']:,} params) | {codec} | {final['test_accuracy']:.4f} "
                         f"({final['steps']} steps) | {delta} | {target:.3f} | {reached} | {per_step:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
