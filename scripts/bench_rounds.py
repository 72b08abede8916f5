#!/usr/bin/env python3
"""Targets 2-4 of issue 3 (ratios against PyTorch) measured in alternating rounds.

The machines we run on share their memory bandwidth with neighbours, and what they give
changes by 2x and more from one minute to the next. A ratio of two numbers taken minutes apart
(as in the big table of scripts/bench_all.sh) then says as much about the neighbours as about
the optimizers. This script measures each pair (ours, PyTorch's variant) back to back, several
rounds over, swapping who goes first every round, and reports the median of the per-round
ratios with their range.

Usage (from the repository root, in the venv of scripts/requirements-bench.txt):

    python scripts/bench_rounds.py --rounds 5 --markdown BENCHMARKS.md

writes the section "## Targets 2-4 in alternating rounds" of BENCHMARKS.md (replacing an older
one; scripts/bench_table.py keeps it when it rewrites the file) and the raw measurements to
target/bench/rounds-<time>.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "downhill")
HEADING = "## Targets 2-4 in alternating rounds"

# (target, optimizer, shape, torch variant, required ratio)
PAIRS = (
    [("2", o, "1e7x1", "fused", 1.0) for o in ("adam", "adamw", "sgd", "adagrad")]
    + [("3", o, "1e6x1000", "fused", 5.0) for o in ("adam", "adamw", "sgd", "adagrad")]
    + [("4", o, "1e7x1", "foreach", 5.0)
       for o in ("rmsprop", "nadam", "radam", "adamax", "adadelta")]
)


def hyper_flags(opt: str) -> list[str]:
    """The hyperparameters every library runs: our defaults, SGD with momentum 0.9."""
    return ["--momentum", "0.9"] if opt == "sgd" else []


def cpus(k: int) -> str:
    return ",".join(map(str, sorted(os.sched_getaffinity(0))[:k]))


def ours(opt: str, shape: str, threads: int, min_time_ms: int) -> dict:
    params, tensors = shape.split("x")
    cmd = ["taskset", "-c", cpus(threads), BIN, "bench", "--optimizer", opt, *hyper_flags(opt),
           "--params", params, "--tensors", tensors, "--threads", str(threads),
           "--min-time-ms", str(min_time_ms), "--json"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def torch(opt: str, shape: str, variant: str, threads: int, min_time_ms: int,
          configs: str) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_peers.py"), "--optimizers", opt,
           "--shape", shape, "--threads", str(threads), "--libraries", "torch",
           "--torch-variants", variant, "--configs", configs, "--min-time-ms", str(min_time_ms)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = [r for r in rows if r.get("variant") == variant and "mparams_per_s" in r]
    if not rows:
        raise RuntimeError(f"bench_peers.py gave no {variant} result for {opt} {shape}: {out}")
    return rows[0]


def fmt(x: float) -> str:
    return f"{x:.3g}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time-ms", type=int, default=300)
    ap.add_argument("--markdown", help="file whose rounds section to write")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "downhill-lab"], cwd=ROOT, check=True)
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw_path = os.path.join(ROOT, "target", "bench", f"rounds-{stamp}.jsonl")
    configs = os.path.join(ROOT, "target", "bench", f"rounds-configs-{stamp}.json")
    cfg = {}
    for opt in sorted({p[1] for p in PAIRS}):
        r = ours(opt, "1000x1", 1, 0)
        cfg[opt] = r["config"]
    json.dump(cfg, open(configs, "w"))

    start = time.time()
    ratios: dict[tuple, list[float]] = {p: [] for p in PAIRS}
    with open(raw_path, "w") as raw:
        for rnd in range(a.rounds):
            for p in PAIRS:
                target, opt, shape, variant, _ = p
                run_ours = lambda: ours(opt, shape, a.threads, a.min_time_ms)  # noqa: E731
                run_torch = lambda: torch(opt, shape, variant, a.threads,  # noqa: E731
                                          a.min_time_ms, configs)
                if rnd % 2 == 0:
                    o, t = run_ours(), run_torch()
                else:
                    t, o = run_torch(), run_ours()
                ratio = o["mparams_per_s"] / t["mparams_per_s"]
                ratios[p].append(ratio)
                raw.write(json.dumps({"round": rnd, "target": target, "optimizer": opt,
                                      "shape": shape, "variant": variant,
                                      "ours_mparams_per_s": o["mparams_per_s"],
                                      "ours_fraction_of_probe": o["fraction_of_probe"],
                                      "torch_mparams_per_s": t["mparams_per_s"],
                                      "ratio": ratio}) + "\n")
                raw.flush()
                print(f"round {rnd + 1}/{a.rounds} target {target} {opt} {shape}: ours "
                      f"{o['mparams_per_s']:.0f} Mparam/s, torch {variant} "
                      f"{t['mparams_per_s']:.0f}: {ratio:.2f}x", file=sys.stderr)
    minutes = (time.time() - start) / 60

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    import torch as _torch  # only for its version
    lines = [HEADING, "",
             f"`python scripts/bench_rounds.py --rounds {a.rounds}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`"
             f"{' (with uncommitted changes)' if dirty else ''}, {platform.processor() or 'x86_64'}"
             f" with {os.cpu_count()} CPUs, torch {_torch.__version__}, {a.threads} threads, "
             f"{minutes:.0f} min. Each row: ours and PyTorch's variant measured back to back "
             f"(who goes first alternates), {a.rounds} times; the verdict uses the median of "
             "the per-round ratios. Raw numbers: `target/bench/rounds-*.jsonl`.", "",
             "| target | optimizer | shape | vs torch | median ratio | range | needed | verdict |",
             "|---|---|---|---|---:|---|---:|---|"]
    for p in PAIRS:
        target, opt, shape, variant, need = p
        rs = ratios[p]
        med = statistics.median(rs)
        verdict = "met" if med >= need else f"missed ({med / need:.2f} of the target)"
        lines.append(f"| {target} | {opt} | {shape} | {variant} | {fmt(med)} | "
                     f"{fmt(min(rs))} - {fmt(max(rs))} | {need:g}x | {verdict} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if a.markdown:
        text = open(a.markdown).read() if os.path.exists(a.markdown) else ""
        if HEADING in text:
            head, rest = text.split(HEADING, 1)
            nxt = rest.find("\n## ")
            tail = rest[nxt + 1:] if nxt >= 0 else ""
            text = head + section + ("\n" + tail if tail else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        open(a.markdown, "w").write(text)
        print(f"wrote {a.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
