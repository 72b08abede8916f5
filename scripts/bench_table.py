#!/usr/bin/env python3
"""Turn the JSON lines of `scripts/bench_all.sh` into tables, ratios and issue 3's targets.

    python scripts/bench_table.py RESULTS.jsonl [--meta META.json] [--markdown BENCHMARKS.md]

Prints the tables to stdout. With ``--markdown`` it also writes the whole BENCHMARKS.md: the run's
facts (command, date, CPU, commit, versions, machine load), one section per target of issue 3
with met / missed and by how much, and the tables. Every number and every verdict is computed
here from the results file; nothing is typed by hand. The one hand-written part, the analysis of
missed targets from profiles, is kept from the existing file between the markers
``<!-- analysis:begin -->`` and ``<!-- analysis:end -->``.

Each results line is one JSON object with ``library`` (downhill / torch / optax), ``variant``,
``optimizer``, ``params``, ``tensors``, ``threads``, ``median_step_seconds`` and
``mparams_per_s``; ours also carry ``gb_per_s``, ``probe_gb_per_s`` and ``fraction_of_probe``.
If the same measurement appears twice, the last one counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

OPTIMIZERS = [
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta", "lamb",
    "lars", "lion",
]
FUSED_IN_TORCH = ["adam", "adamw", "sgd", "adagrad"]
UNFUSED_IN_TORCH = ["rmsprop", "nadam", "radam", "adamax", "adadelta"]
PEERS = [("torch", "single-tensor"), ("torch", "foreach"), ("torch", "fused"), ("optax", "jit")]

# Issue 3's targets (2 threads).
TARGET_THREADS = 2
PROBE_FRACTION = 0.85
FUSED_RATIO = 1.0
MANY_TENSORS_RATIO = 5.0
FOREACH_RATIO = 5.0
SMALL_STEP_SECONDS = 2e-6

ANALYSIS_BEGIN = "<!-- analysis:begin -->"
ANALYSIS_END = "<!-- analysis:end -->"


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: str) -> dict:
    """{(library, variant, optimizer, params, tensors, threads): row} of successful rows."""
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "error" in r or "median_step_seconds" not in r:
                continue
            key = (r.get("library", "downhill"), r.get("variant", "fused"), r["optimizer"],
                   int(r["params"]), int(r["tensors"]), int(r["threads"]))
            rows[key] = r
    return rows


def phases(path: str) -> list[dict]:
    """The `{"kind": "phase", ...}` lines: how busy the CPUs were before each phase."""
    out = []
    with open(path) as f:
        for line in f:
            if '"kind": "phase"' in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


# Other work using more than this fraction of all CPUs at a phase's start makes it suspect.
BUSY_THRESHOLD = 0.10


def load_section(ph: list[dict]) -> str:
    if not ph:
        return "_Not recorded._"
    busy = [p for p in ph if p["other_cpu_busy"] > BUSY_THRESHOLD]
    worst = max(ph, key=lambda p: p["other_cpu_busy"])
    text = (f"Before each phase (one phase = ours, or the peers, for one thread count and "
            f"shape), while none of the benchmark's processes ran, the CPUs' busy fraction was "
            f"sampled for 0.5 s from /proc/stat. {len(ph) - len(busy)} of {len(ph)} phases "
            f"started on an idle machine (other work <= {BUSY_THRESHOLD:.0%} of the CPUs); "
            f"the busiest start was {worst['part']} at {worst['threads']} thread(s), "
            f"{worst['shape']}: {worst['other_cpu_busy']:.0%} busy.")
    if busy:
        rows = [[p["time"], f"{p['threads']}", p["shape"], p["part"],
                 f"{p['other_cpu_busy']:.0%}", f"{p['load1']:.2f}"] for p in busy]
        text += ("\n\nPhases that started while other work ran (their numbers are suspect; "
                 "PyTorch's OpenMP threads suffer most from a busy machine):\n\n"
                 + table(["time", "threads", "shape", "part", "other CPU busy", "load (1 min)"],
                         rows, "lrllrr"))
    return text


def errors(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "error" in r:
                    out.append(r)
    return out


class Results:
    def __init__(self, rows: dict):
        self.rows = rows

    def get(self, library, variant, opt, params, tensors, threads):
        return self.rows.get((library, variant, opt, params, tensors, threads))

    def ours(self, opt, params, tensors, threads):
        return self.get("downhill", "fused", opt, params, tensors, threads)

    def speed(self, library, variant, opt, params, tensors, threads):
        r = self.get(library, variant, opt, params, tensors, threads)
        return None if r is None else r["mparams_per_s"]

    def ratio(self, opt, params, tensors, threads, library, variant):
        o = self.ours(opt, params, tensors, threads)
        p = self.speed(library, variant, opt, params, tensors, threads)
        if o is None or p is None or p <= 0:
            return None
        return o["mparams_per_s"] / p

    def shapes(self, threads=None):
        s = {(k[3], k[4]) for k in self.rows if threads is None or k[5] == threads}
        return sorted(s, key=lambda x: (x[1] > 1, x[0]))

    def threads(self):
        return sorted({k[5] for k in self.rows}, key=lambda t: (t != TARGET_THREADS, t))


# ---------------------------------------------------------------------------------------------
# Formatting


def sig(x: float | None, digits: int = 3) -> str:
    """3 significant figures, thousands separated: 3,696 / 412 / 41.2 / 4.12 / 0.412."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    if decimals == 0:
        return f"{round(x):,}"
    return f"{x:,.{decimals}f}"


def times(x: float | None) -> str:
    return "n/a" if x is None else f"{sig(x)}x"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1e-7:
        return f"{sig(s * 1e9)} ns"
    if s < 1e-3:
        return f"{sig(s * 1e6)} µs"
    if s < 1:
        return f"{sig(s * 1e3)} ms"
    return f"{sig(s)} s"


def count(n: int) -> str:
    """10000000 -> 1e7, 50000000 -> 5e7, 1000 -> 1e3 (exact powers only), else with commas."""
    if n > 0:
        e = math.floor(math.log10(n))
        m = n / 10**e
        if m == int(m):
            return f"{int(m)}e{e}"
    return f"{n:,}"


def shape_label(params: int, tensors: int) -> str:
    return f"{count(params)} x 1" if tensors == 1 else f"{count(params)} in {tensors:,}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or ("l" * 2 + "r" * (len(header) - 2))
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "**not measured**"}[met]


# ---------------------------------------------------------------------------------------------
# Tables


def main_table(res: Results, threads: int) -> str:
    header = ["optimizer", "shape", "ours Mparam/s", "ours GB/s", "probe GB/s", "of probe",
              "torch single", "torch foreach", "torch fused", "optax", "/ fused", "/ foreach",
              "/ optax", "ours step"]
    rows = []
    for params, tensors in res.shapes(threads):
        for opt in OPTIMIZERS:
            o = res.ours(opt, params, tensors, threads)
            peers = [res.speed(lib, var, opt, params, tensors, threads) for lib, var in PEERS]
            if o is None and all(p is None for p in peers):
                continue
            rows.append([
                opt, shape_label(params, tensors),
                sig(o and o["mparams_per_s"]), sig(o and o["gb_per_s"]),
                sig(o and o["probe_gb_per_s"]), pct(o and o["fraction_of_probe"]),
                *[sig(p) for p in peers],
                times(res.ratio(opt, params, tensors, threads, "torch", "fused")),
                times(res.ratio(opt, params, tensors, threads, "torch", "foreach")),
                times(res.ratio(opt, params, tensors, threads, "optax", "jit")),
                seconds(o and o["median_step_seconds"]),
            ])
    return table(header, rows)


def by_shape_table(res: Results, threads: int) -> str:
    """Compact view: ours Mparam/s and ours / best PyTorch per optimizer and shape."""
    shapes = res.shapes(threads)
    header = ["optimizer"] + [shape_label(*s) for s in shapes]
    rows = []
    for opt in OPTIMIZERS:
        cells = []
        for params, tensors in shapes:
            o = res.ours(opt, params, tensors, threads)
            best = max((p for p in (res.speed("torch", v, opt, params, tensors, threads)
                                    for v in ("single-tensor", "foreach", "fused")) if p),
                       default=None)
            if o is None:
                cells.append("n/a")
            elif best is None:
                cells.append(sig(o["mparams_per_s"]))
            else:
                cells.append(f"{sig(o['mparams_per_s'])} ({times(o['mparams_per_s'] / best)})")
        rows.append([opt] + cells)
    return table(header, rows, "l" + "r" * len(shapes))


# ---------------------------------------------------------------------------------------------
# Targets


def target_probe(res: Results) -> tuple[str, bool | None]:
    shapes = [s for s in res.shapes(TARGET_THREADS) if s[0] >= 10_000_000]
    rows, worst_all, met = [], None, None
    for opt in OPTIMIZERS:
        fr = [res.ours(opt, p, t, TARGET_THREADS) for p, t in shapes]
        fr = [r["fraction_of_probe"] if r else None for r in fr]
        known = [f for f in fr if f is not None]
        worst = min(known) if known else None
        ok = None if worst is None else worst >= PROBE_FRACTION
        if ok is not None:
            met = ok if met is None else (met and ok)
        if worst is not None and (worst_all is None or worst < worst_all[1]):
            worst_all = (opt, worst)
        rows.append([opt] + [pct(f) for f in fr] + [pct(worst), miss_probe(worst)])
    text = [table(["optimizer"] + [shape_label(*s) for s in shapes] + ["worst", "verdict"], rows,
                  "l" + "r" * (len(shapes) + 1) + "l")]
    if worst_all:
        misses = [r[0] for r in rows if r[-1].startswith("missed")]
        summary = (f"Worst case: {worst_all[0]} at {pct(worst_all[1])} of its probe. "
                   f"{len(OPTIMIZERS) - len(misses)} of {len(OPTIMIZERS)} optimizers meet it")
        summary += f"; missed for {', '.join(misses)}." if misses else "."
        text.insert(0, summary)
    return "\n\n".join(text), met


def miss_probe(f):
    if f is None:
        return "not measured"
    if f >= PROBE_FRACTION:
        return "met"
    points = round(100 * (PROBE_FRACTION - f))
    return (f"missed by {points} point{'s' if points != 1 else ''} "
            f"(needs {sig(PROBE_FRACTION / f)}x the speed)")


def ratio_target(res, opts, params, tensors, library, variant, goal) -> tuple[str, bool | None]:
    rows, met = [], None
    for opt in opts:
        o = res.ours(opt, params, tensors, TARGET_THREADS)
        p = res.speed(library, variant, opt, params, tensors, TARGET_THREADS)
        r = res.ratio(opt, params, tensors, TARGET_THREADS, library, variant)
        if r is None:
            v = "not measured"
        elif r >= goal:
            v = "met"
        else:
            v = f"missed: {sig(r)}x of {sig(goal)}x (needs {sig(goal / r)}x faster)"
        if r is not None:
            met = (r >= goal) if met is None else (met and r >= goal)
        rows.append([opt, sig(o and o["mparams_per_s"]), sig(p), times(r), v])
    head = ["optimizer", "ours Mparam/s", f"{library} {variant} Mparam/s", "ratio", "verdict"]
    return table(head, rows, "lrrrl"), met


def target_small(res: Results) -> tuple[str, bool | None]:
    rows, met = [], None
    thr = sorted({k[5] for k in res.rows}, key=lambda t: (t != TARGET_THREADS, t))
    for opt in OPTIMIZERS:
        cells = []
        for t in thr:
            o = res.ours(opt, 1000, 1, t)
            cells.append(seconds(o and o["median_step_seconds"]))
        o = res.ours(opt, 1000, 1, TARGET_THREADS)
        fused = res.get("torch", "fused", opt, 1000, 1, TARGET_THREADS)
        foreach = res.get("torch", "foreach", opt, 1000, 1, TARGET_THREADS)
        s = o and o["median_step_seconds"]
        if s is None:
            v = "not measured"
        elif s <= SMALL_STEP_SECONDS:
            v = "met"
        else:
            v = f"missed by {seconds(s - SMALL_STEP_SECONDS)} ({sig(s / SMALL_STEP_SECONDS)}x the budget)"
        if s is not None:
            met = (s <= SMALL_STEP_SECONDS) if met is None else (met and s <= SMALL_STEP_SECONDS)
        rows.append([opt] + cells + [seconds(fused and fused["median_step_seconds"]),
                                     seconds(foreach and foreach["median_step_seconds"]), v])
    head = (["optimizer"] + [f"ours, {t} thread{'s' if t > 1 else ''}" for t in thr]
            + [f"torch fused, {TARGET_THREADS} threads", f"torch foreach, {TARGET_THREADS} threads",
               "verdict"])
    return table(head, rows, "l" + "r" * (len(thr) + 2) + "l"), met


def targets(res: Results) -> list[tuple[str, str, bool | None]]:
    out = []
    body, met = target_probe(res)
    out.append((f"1. Every optimizer at >= {PROBE_FRACTION:.0%} of its probe bandwidth at "
                f">= 1e7 parameters", body, met))
    body, met = ratio_target(res, FUSED_IN_TORCH, 10_000_000, 1, "torch", "fused", FUSED_RATIO)
    out.append(("2. Adam, AdamW, SGD with momentum and Adagrad >= 1.0x PyTorch fused at 1e7 "
                "parameters in one tensor", body, met))
    body, met = ratio_target(res, FUSED_IN_TORCH, 1_000_000, 1000, "torch", "fused",
                             MANY_TENSORS_RATIO)
    out.append(("3. >= 5x PyTorch fused at 1e6 parameters as 1,000 tensors (the optimizers "
                "PyTorch fuses)", body, met))
    body, met = ratio_target(res, UNFUSED_IN_TORCH, 10_000_000, 1, "torch", "foreach",
                             FOREACH_RATIO)
    out.append(("4. RMSprop, NAdam, RAdam, Adamax, Adadelta >= 5x PyTorch foreach at 1e7 "
                "parameters", body, met))
    body, met = target_small(res)
    out.append(("5. One step on a single 1,000-parameter tensor costs <= 2 µs", body, met))
    return out


# ---------------------------------------------------------------------------------------------
# Output


def render_tables(res: Results) -> str:
    parts = []
    for t in res.threads():
        parts.append(f"### {t} thread{'s' if t > 1 else ''}: ours in Mparam/s "
                     f"(ours / best PyTorch variant)\n\n{by_shape_table(res, t)}")
    for t in res.threads():
        parts.append(f"### {t} thread{'s' if t > 1 else ''}: every measurement\n\n"
                     f"Speeds in Mparam/s (million parameters updated per second, median step). "
                     f"`/ fused`, `/ foreach`, `/ optax`: ours divided by that peer; `of probe`: "
                     f"our GB/s over the probe's.\n\n{main_table(res, t)}")
    return "\n\n".join(parts)


def old_analysis(path: str) -> str:
    if not os.path.exists(path):
        return ""
    text = open(path).read()
    if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
        return text[text.index(ANALYSIS_BEGIN) + len(ANALYSIS_BEGIN):text.index(ANALYSIS_END)]
    return ""


MY_SECTIONS = ("Targets of issue 3", "Analysis of the misses", "Machine load during the run",
               "Tables", "Failed measurements")


def foreign_sections(path: str) -> str:
    """`## ` sections of the existing file that this script does not write (added by hand or
    by another script, such as the lab's time per epoch): kept, in order, at the end."""
    if not os.path.exists(path):
        return ""
    keep, current = [], None
    for line in open(path).read().split("\n"):
        if line.startswith("## "):
            current = None if line[3:].startswith(MY_SECTIONS) else [line]
            if current is not None:
                keep.append(current)
        elif current is not None:
            current.append(line)
    return "\n\n".join("\n".join(sec).strip("\n") for sec in keep)


def render_markdown(res: Results, meta: dict, errs: list[dict], analysis: str,
                    ph: list[dict] | None = None, extra: str = "") -> str:
    m = meta
    lines = ["# Benchmarks", ""]
    lines.append("Generated by `scripts/bench_all.sh` (tables and verdicts by "
                 "`scripts/bench_table.py` from the results file; do not edit by hand except "
                 "between the analysis markers).")
    lines.append("")
    if m.get("quick"):
        lines += ["> **Quick mode**: tiny sizes and short timings, to test the scripts. These "
                  "numbers say nothing about the targets.", ""]
    if m.get("busy_note"):
        lines += [f"> **Machine not quiet**: {m['busy_note']}", ""]
    facts = [
        ("Command", f"`{m.get('command', '?')}`"),
        ("Date", m.get("date", "?")),
        ("CPU", m.get("cpu", "?")),
        ("Commit", f"`{m.get('commit', '?')}`"
         + (" (with uncommitted changes)" if m.get("dirty") else "")),
        ("rustc", m.get("rustc", "?")),
        ("Kernels' ISA", ", ".join(sorted({r.get('isa', '?') for k, r in res.rows.items()
                                           if k[0] == 'downhill'})) or "?"),
        ("Python peers", m.get("peers", "?")),
        ("Timing", m.get("timing", "?")),
        ("Environment", m.get("env", "?")),
        ("Load average before / after", f"{m.get('load_before', '?')} / {m.get('load_after', '?')}"),
        ("Busiest processes at the start", m.get("top_before", "?")),
        ("Wall time of the run", m.get("elapsed", "?")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in facts]
    lines += ["", "How each library is run:", ""]
    lines += [
        "- **ours**: `downhill bench --json` (one process per measurement), rayon pool of K threads; "
        "the probe is a fused kernel with the optimizer's exact access shape (same streams, "
        "same passes, the same f64 lane sums in a first pass) run through the same engine, "
        "alternating with the optimizer in blocks of at least 25 ms on its own copy of the "
        "tensors, so `of probe` (the median over block pairs) is the fraction of the bandwidth "
        "this machine gave that access shape at that moment. Tensors of at most 1,024 elements "
        "take one pass in LAMB and LARS, and their probe does too.",
        "- **torch**: `torch.optim.X` with `foreach=False` (\"single\", PyTorch's CPU default), "
        "`foreach=True`, and `fused=True` where it exists (Adam, AdamW, SGD, Adagrad); "
        "`torch.set_num_threads(K)` and the process pinned to K CPUs.",
        "- **optax**: `jax.jit` of `update` + `apply_updates`, parameters and state donated, "
        "`block_until_ready` after each step; the process pinned to K CPUs (what bounds XLA's "
        "CPU thread pool); compilation happens in the first warm-up step and is never timed.",
        "- Same hyperparameters everywhere (our defaults = PyTorch's; SGD with momentum 0.9), "
        "gradients fixed, median of the timed steps after warm-up.",
        "",
    ]
    lines += ["## Targets of issue 3 (2 threads)", ""]
    summary = []
    for title, body, met in targets(res):
        summary.append([title.split(" ", 1)[0].rstrip("."), title.split(" ", 1)[1], verdict(met)])
    lines += table(["#", "target", "verdict"], summary, "lll").split("\n") + [""]
    for title, body, met in targets(res):
        lines += [f"### {title}: {verdict(met)}", "", body, ""]
    lines += ["## Analysis of the misses (profiles)", "", ANALYSIS_BEGIN]
    lines += [analysis.strip("\n") if analysis.strip() else
              "_No analysis written yet._"]
    lines += [ANALYSIS_END, ""]
    lines += ["## Machine load during the run", "", load_section(ph or []), ""]
    lines += ["## Tables", "", render_tables(res), ""]
    if errs:
        lines += ["## Failed measurements", ""]
        for e in errs:
            lines.append(f"- {e.get('library')} {e.get('variant')} {e.get('optimizer')} "
                         f"{shape_label(int(e['params']), int(e['tensors']))}, "
                         f"{e.get('threads')} threads: {e['error']}")
        lines.append("")
    if extra:
        lines += [extra, ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("--meta", help="JSON file with the run's facts (from bench_all.sh)")
    ap.add_argument("--markdown", help="write the full BENCHMARKS.md here")
    a = ap.parse_args()
    res = Results(load(a.results))
    if not res.rows:
        print(f"{a.results}: no results", file=sys.stderr)
        return 1
    print(render_tables(res))
    print()
    for title, body, met in targets(res):
        print(f"### {title}: {verdict(met)}\n\n{body}\n")
    if a.markdown:
        meta = json.load(open(a.meta)) if a.meta else {}
        text = render_markdown(res, meta, errors(a.results), old_analysis(a.markdown),
                               phases(a.results), foreign_sections(a.markdown))
        with open(a.markdown, "w") as f:
            f.write(text)
        print(f"wrote {a.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
