#!/usr/bin/env python3
"""Two builds of downhill timed against each other: A/B in alternating back-to-back runs.

A refactoring must not slow the optimizers down, but these shared machines move their memory
bandwidth by 2x within minutes, so a number measured before a change and one measured after say
little. This script runs `downhill bench --json` of build A and of build B back to back for each
case, several rounds over, swapping which goes first every round, and reports the median of
the per-round ratios B/A (of parameters updated per second) with their range.

Usage (from the repository root; build A is typically a release binary of the previous
commit, e.g. from `git worktree add /tmp/old <rev> && cargo build --release`):

    python3 scripts/bench_ab.py --a /tmp/old/target/release/downhill \\
        --b target/release/downhill --rounds 5 [--markdown]

Cases: adam, adagrad and lamb at 1e7 parameters in one tensor and at 1e6 as 1,000 tensors
(`--cases` to change). No Python package is needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import tempfile
import time

DEFAULT_CASES = [
    (opt, params, tensors)
    for opt in ("adam", "adagrad", "lamb")
    for (params, tensors) in (("1e7", 1), ("1e6", 1000))
]


def run(binary: str, opt: str, params: str, tensors: int, min_time_ms: int, threads: int,
        median: bool) -> float:
    out = subprocess.run(
        [binary, "bench", "--optimizer", opt, "--params", params, "--tensors", str(tensors),
         "--json", "--min-time-ms", str(min_time_ms), "--threads", str(threads)],
        check=True, capture_output=True, text=True,
    ).stdout
    got = json.loads(out)
    if median:
        return got["params"] / got["median_step_seconds"] / 1e6
    return got["mparams_per_s"]


def instructions_per_step(binary: str, opt: str, params: str, tensors: int) -> float:
    """Instructions per timed step (optimizer and probe, one thread) counted by callgrind:
    the difference between a run of 13 and one of 3 timed steps, over 10. Unlike a time, the
    count does not move with whatever else the machine is doing."""
    counts = []
    for steps in (3, 13):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                 binary, "bench", "--optimizer", opt, "--params", params, "--tensors",
                 str(tensors), "--threads", "1", "--warmup", "1", "--min-steps", str(steps),
                 "--min-time-ms", "0", "--json"],
                check=True, capture_output=True, text=True,
            )
        got = json.loads(out.stdout)
        collected = re.search(r"Collected : (\d+)", out.stderr)
        if collected is None:
            raise SystemExit(f"no callgrind total in: {out.stderr[-500:]}")
        counts.append((got["steps"], int(collected.group(1))))
    (s0, c0), (s1, c1) = counts
    return (c1 - c0) / (s1 - s0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="baseline downhill binary")
    ap.add_argument("--b", required=True, help="candidate downhill binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time-ms", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="rayon threads of both builds")
    ap.add_argument("--median", action="store_true",
                    help="rate from the median step time instead of the mean: steadier on a "
                         "machine shared with other work (a step preempted by another process "
                         "moves the mean, rarely the median)")
    ap.add_argument("--callgrind", action="store_true",
                    help="compare instructions per step counted by valgrind's callgrind "
                         "(one thread) instead of timing: repeatable on a busy machine")
    ap.add_argument("--cases", help="comma-separated optimizer:params:tensors, e.g. adam:1e7:1")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    cases = DEFAULT_CASES
    if args.cases:
        cases = [(o, p, int(t)) for o, p, t in (c.split(":") for c in args.cases.split(","))]
    rows = []
    if args.callgrind:
        print("| optimizer | shape | A instructions per step | B instructions per step | B/A |")
        print("|---|---|---|---|---|")
        for opt, params, tensors in cases:
            a = instructions_per_step(args.a, opt, params, tensors)
            b = instructions_per_step(args.b, opt, params, tensors)
            print(f"| {opt} | {params} x {tensors} | {a:.4g} | {b:.4g} | {b / a:.4f} |",
                  flush=True)
        print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, callgrind, "
              f"A = `{args.a}`, B = `{args.b}`")
        return
    for opt, params, tensors in cases:
        ratios, a_all, b_all = [], [], []
        for r in range(args.rounds):
            order = ("a", "b") if r % 2 == 0 else ("b", "a")
            got = {}
            for who in order:
                got[who] = run(getattr(args, who), opt, params, tensors, args.min_time_ms,
                                args.threads, args.median)
            a_all.append(got["a"])
            b_all.append(got["b"])
            ratios.append(got["b"] / got["a"])
        rows.append((opt, params, tensors, statistics.median(a_all), statistics.median(b_all),
                     statistics.median(ratios), min(ratios), max(ratios)))
        print(f"{opt} {params} x {tensors}: B/A median {rows[-1][5]:.3f} "
              f"(range {rows[-1][6]:.3f}-{rows[-1][7]:.3f})", flush=True)
    if args.markdown:
        print()
        print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {args.rounds} rounds, "
              f"{args.threads} thread(s), rate from the {'median' if args.median else 'mean'} step, "
              f"A = `{args.a}`, B = `{args.b}`")
        print()
        print("| optimizer | shape | A Mparam/s (median) | B Mparam/s (median) | B/A median | B/A range |")
        print("|---|---|---|---|---|---|")
        for opt, params, tensors, a, b, med, lo, hi in rows:
            print(f"| {opt} | {params} x {tensors} | {a:.0f} | {b:.0f} | {med:.3f} | {lo:.3f}-{hi:.3f} |")


if __name__ == "__main__":
    main()
