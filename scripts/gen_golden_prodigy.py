#!/usr/bin/env python3
"""Golden trajectories of Prodigy (testdata/golden/prodigy/).

Reference implementation (versions pinned in scripts/requirements-golden.txt):
  * PyPI prodigyopt 1.1.2, `prodigyopt.Prodigy`, on PyTorch CPU tensors, float32, real
    nn.Parameters, one `opt.step()` per step.

Inputs, file format and metric are those of scripts/gen_golden.py (whose helpers this script
imports: the same RNG, tensors, gradients and JSON writer); see testdata/golden/README.md.
This script writes only into testdata/golden/prodigy/, its own README.md included.

Two sets (see testdata/golden/prodigy/README.md, which this script writes): prodigyopt itself
at the snapshots where it is well-conditioned, and prodigyopt's own code with its two
reductions in float64 (downhill's order) through all 200 steps. `reference_spread` in each
file is the tests' metric between the two, per snapshot.

Usage:
    pip install -r scripts/requirements-golden.txt
    python scripts/gen_golden_prodigy.py            # writes testdata/golden/prodigy/
    python scripts/gen_golden_prodigy.py --out DIR  # write somewhere else (e.g. to diff)
"""

import argparse
import contextlib
import inspect
import io
import json
import math
import os
import sys
from collections import OrderedDict
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as G  # noqa: E402  (sets the MKL/JAX environment before importing torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import prodigyopt  # noqa: E402

ALL, G0, G1 = G.ALL, G.G0, G.G1
PRODIGY_VERSION = metadata.version("prodigyopt")


def cfg_prodigy(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
                decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
                d_coef=1.0, growth_rate=None, slice_p=1):
    """A downhill ProdigyConfig, every field written out (growth_rate None = prodigyopt's inf)."""
    return OrderedDict(lr=lr, betas=list(betas), beta3=beta3, eps=eps, weight_decay=weight_decay,
                       decouple=decouple, use_bias_correction=use_bias_correction,
                       safeguard_warmup=safeguard_warmup, d0=d0, d_coef=d_coef,
                       growth_rate=growth_rate, slice_p=slice_p)


def build_cases():
    cases = []

    def add(name, groups):
        cases.append(dict(name=name, optimizer="prodigy", kind="torch", groups=groups))

    add("prodigy_plain", [(ALL, cfg_prodigy())])
    add("prodigy_wd0.1", [(ALL, cfg_prodigy(weight_decay=0.1))])
    add("prodigy_wd0.1_coupled", [(ALL, cfg_prodigy(weight_decay=0.1, decouple=False))])
    add("prodigy_bias_correction", [(ALL, cfg_prodigy(use_bias_correction=True))])
    add("prodigy_safeguard_warmup", [(ALL, cfg_prodigy(safeguard_warmup=True))])
    add("prodigy_beta3_0.99", [(ALL, cfg_prodigy(beta3=0.99))])
    add("prodigy_growth1.02", [(ALL, cfg_prodigy(growth_rate=1.02))])
    add("prodigy_beta1_0_wd0.01_coupled",
        [(ALL, cfg_prodigy(betas=(0.0, 0.99), weight_decay=0.01, decouple=False))])
    add("prodigy_lr0.5_dcoef2_d0_1e-4", [(ALL, cfg_prodigy(lr=0.5, d_coef=2.0, d0=1e-4))])
    add("prodigy_groups",
        [(G0, cfg_prodigy(weight_decay=0.1)), (G1, cfg_prodigy(eps=1e-6))])
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def group_kwargs(cfg):
    kw = dict(cfg)
    kw["betas"] = tuple(kw["betas"])
    if kw["growth_rate"] is None:
        kw["growth_rate"] = float("inf")
    return kw


def expected_buffers(opt, cfg):
    if opt == "prodigy":
        return (["exp_avg"] if cfg["betas"][0] > 0 else []) + ["exp_avg_sq", "s", "p0"]
    return _expected(opt, cfg)


_expected = G.expected_buffers
G.expected_buffers = expected_buffers


class ProdigyRunner:
    """prodigyopt.Prodigy on real nn.Parameters (dtype float32, or float64 for the spread)."""

    dtype = torch.float32
    cls = None  # ProdigyTorchSums, set below

    def __init__(self, case, initial):
        self.params = OrderedDict(
            (n, torch.nn.Parameter(torch.from_numpy(initial[n].copy()).to(self.dtype)))
            for n in G.TENSOR_NAMES)
        groups = []
        for names, cfg in case["groups"]:
            g = group_kwargs(cfg)
            g["params"] = [self.params[n] for n in names]
            groups.append(g)
        defaults = group_kwargs(case["groups"][0][1])
        with contextlib.redirect_stdout(io.StringIO()):  # "Using decoupled weight decay"
            self.opt = self.cls(groups, **defaults)
        self.counts = {n: 0 for n in G.TENSOR_NAMES}

    def step(self, grads):
        for n, p in self.params.items():
            if grads[n] is None:
                p.grad = None
            else:
                p.grad = torch.from_numpy(grads[n].copy()).to(self.dtype)
                self.counts[n] += 1
        self.opt.step()

    def snapshot(self):
        params, state, counts = OrderedDict(), OrderedDict(), OrderedDict()
        for n, p in self.params.items():
            params[n] = p.detach().numpy().astype(np.float32)
            st = self.opt.state.get(p, {})
            bufs = OrderedDict()
            for key in ("exp_avg", "exp_avg_sq", "s", "p0"):
                if key not in st:
                    continue
                v = st[key].detach().numpy().astype(np.float32).reshape(-1)
                if key == "p0" and v.size == 1 and p.numel() != 1:
                    # prodigyopt keeps the p0 of an all-zero parameter as a 0-d zero tensor.
                    assert v[0] == 0.0, n
                    v = np.zeros(p.numel(), dtype=np.float32)
                bufs[key] = v
            state[n] = bufs
            if "step" in st:
                assert st["step"] == self.counts[n], (n, st["step"], self.counts[n])
            counts[n] = self.counts[n]
        return params, state, counts

    def globals(self):
        g = self.opt.param_groups[0]
        return OrderedDict((k, float(g[k])) for k in ("d", "d_max", "d_numerator", "d_denom",
                                                      "d_hat", "k") if k in g)


def _prodigy_with_sums(dot_expr, l1_expr, label):
    """prodigyopt.Prodigy's own source with its two reductions (and the sqrt) replaced."""
    """prodigyopt.Prodigy with its two reductions, `torch.dot(g, p0 - p)` and `s.abs().sum()`,
    taken in float64 (as downhill takes them); everything else is
    prodigyopt's own code, unchanged (its source, with those two expressions replaced)."""
    src = inspect.getsource(prodigyopt.prodigy.Prodigy)
    dot = "torch.dot(sliced_grad, p0.data - p.data.flatten()[::slice_p]).item()"
    l1 = "s.abs().sum().item()"
    assert src.count(dot) == 1 and src.count(l1) == 1
    src = src.replace(dot, dot_expr).replace(l1, l1_expr)
    # torch.sqrt calls MKL's vsSqrt, which on this machine is not correctly rounded even with
    # MKL_ENABLE_INSTRUCTIONS=AVX2 (measured: about 19% of float32 results 1 ulp off; see
    # gen_golden.py for the intent). The goldens take the correctly rounded sqrt: float64 sqrt
    # rounded to float32 (exact: 53 >= 2 * 24 + 2 bits), the IEEE float32 sqrt.
    sqrt = "exp_avg_sq.sqrt()"
    assert src.count(sqrt) == 1
    src = src.replace(sqrt, "exp_avg_sq.double().sqrt().float()")
    ns = dict(vars(prodigyopt.prodigy))
    ns["math"] = math
    exec(compile(src, "prodigyopt/prodigy.py (%s)" % label, "exec"), ns)
    return ns["Prodigy"]


# prodigyopt itself (only the sqrt made exact, see above).
ProdigyTorchSums = _prodigy_with_sums(
    "torch.dot(sliced_grad, p0.data - p.data.flatten()[::slice_p]).item()",
    "s.abs().sum().item()", "exact sqrt")
ProdigyF64Sums = _prodigy_with_sums(
    "torch.dot(sliced_grad.double(), (p0.data - p.data.flatten()[::slice_p]).double()).item()",
    "s.abs().double().sum().item()", "float64 sums")
# The same sums correctly rounded (math.fsum of the exact float64 products): a second, equally
# valid float64 order, used only to find the steps where float64 sums are well-conditioned.
ProdigyExactSums = _prodigy_with_sums(
    "math.fsum((sliced_grad.double() * (p0.data - p.data.flatten()[::slice_p]).double())"
    ".tolist())",
    "math.fsum(s.abs().double().tolist())", "exact sums")


ProdigyRunner.cls = ProdigyTorchSums


class ProdigyRunnerF64Sums(ProdigyRunner):
    cls = ProdigyF64Sums


class ProdigyRunnerExactSums(ProdigyRunner):
    cls = ProdigyExactSums


def snapshot_spread(sa_snap, sb_snap):
    """The tests' metric between two runs at one snapshot, over params and state."""
    (_, pa, sa, _), (_, pb, sb, _) = sa_snap, sb_snap
    errs = []
    for n in G.TENSOR_NAMES:
        errs.append(G.max_rel_err(pa[n], pb[n]))
        errs.extend(G.max_rel_err(sa[n][x], sb[n][x]) for x in sa[n])
    return max(errs)


def run_with_globals(case, initial, grads, runner_cls):
    """G.run_case, also recording prodigyopt's group-wide d, d_max, ... at each snapshot."""
    runner = runner_cls(case, initial)
    snaps, globs = [], []
    for k in range(1, G.STEPS + 1):
        gk = OrderedDict(grads[k])
        if G.w3_grad_missing(k):
            gk["w3"] = None
        runner.step(gk)
        if k in G.SNAPSHOT_STEPS:
            params, state, counts = runner.snapshot()
            snaps.append((k, params, state, counts))
            globs.append(runner.globals())
    return snaps, globs


README = """\
# Golden trajectories: Prodigy

Generated by `scripts/gen_golden_prodigy.py` (do not edit by hand) from the **real** reference
implementation, PyPI `prodigyopt` {prodigy} (`prodigyopt.Prodigy` on PyTorch CPU tensors,
float32, real `nn.Parameter`s; w3 has no gradient on steps `k % 10 == 7`), with the inputs,
file format, metric and tolerance of `../README.md`: relative error `<= 1e-6` at step 1 and
`<= 1e-5` after, params and state (`exp_avg`, `exp_avg_sq`, `s`, `p0`).

```
pip install -r scripts/requirements-golden.txt
python scripts/gen_golden_prodigy.py     # rewrites testdata/golden/prodigy/
```

Versions (also in every file under `"versions"`):

{versions_table}

Two sets of files, both checked by `tests/golden.rs` (fast kernels and reference
implementation):

* `*.json` (this folder): `prodigyopt.Prodigy` itself, at the snapshots where the
  reference is well-conditioned (below).
* `f64_sums/*.json`: the same cases, further along (up to all 200 steps), from
  **prodigyopt's own code** with its two reductions, `torch.dot(g, p0 - p)`
  and `s.abs().sum()`, taken in float64 (the generator takes the source of
  `prodigyopt.Prodigy` and replaces those two expressions, nothing else), as downhill takes
  them (float64 over fixed blocks, not rounded to float32). Its snapshots are those where two
  float64 orders (`torch.dot` against the correctly rounded `math.fsum`) agree within 1e-6;
  where they part, a 1e-16 difference of a sum has grown past that (last column).

Why two sets. Prodigy's step size `d` is the ratio of two sums over all parameters. On these
inputs (gradients that do not depend on the parameters) the numerator `Σ g (p0 - p)` is a
sum of terms of both signs, and `p0 - p` holds few significant bits while `p` has moved by a
few ulps; so the last bit of a float32 dot product (BLAS's order against float64) changes
`d` in its 7th digit, and the changed `d` changes every later step. prodigyopt itself, run
with its two sums in float64 instead of float32, differs from prodigyopt in float32 by the
`spread` below (the tests' metric, worst over params and state): zero through step 5 (where
`d` has already left `d0`), then up to the last column by step 200. That is how much two
correct float32 implementations may differ, and it is larger than 1e-5 after a few steps:
the snapshots of the first set are the ones where this spread is at most 1e-6, so that the
tolerance 1e-5 is a tight test there; the second set goes on as long as float64 sums are
themselves stable to 1e-6.

Each snapshot also has `"global"`: prodigyopt's group-wide `d`, `d_max`, `d_numerator`,
`d_denom`, `d_hat`, `k` after that step (for reading; the tests compare params and state).

## Cases ({n_cases})

| case | groups | d after step 200 | snapshots: prodigyopt | snapshots: f64 sums | spread f32 vs f64 sums at steps 5, 10, 25, 200 | spread f64 vs exact sums at steps 5, 10, 25, 200 |
|---|---|---|---|---|---|---|
{case_table}
"""


def write_readme(out_dir, cases, spreads, finals, kept):
    vt = "\n".join("| %s | %s |" % (k, v) for k, v in G.versions().items())
    vt = "| package | version |\n|---|---|\n" + vt + "\n| prodigyopt | %s |" % PRODIGY_VERSION
    rows = []
    for c in cases:
        sp, sp64 = spreads[c["name"]]
        k32, k64 = kept[c["name"]]
        rows.append("| %s | %d | %.6g | %s | %s | %s | %s |" % (
            c["name"], len(c["groups"]), finals[c["name"]],
            ", ".join(str(k) for k in k32), ", ".join(str(k) for k in k64),
            ", ".join("%.2g" % sp[k] for k in (5, 10, 25, 200)),
            ", ".join("%.2g" % sp64[k] for k in (5, 10, 25, 200))))
    text = README.format(prodigy=PRODIGY_VERSION, versions_table=vt, n_cases=len(cases),
                         case_table="\n".join(rows))
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


WELL_CONDITIONED = 1e-6


def write_case(path, case, initial, snaps, globs, reference, source, spread):
    doc = G.case_json(case, snaps, initial, reference, spread)
    doc["source"] = source
    doc["versions"]["prodigyopt"] = PRODIGY_VERSION
    for s, g in zip(doc["snapshots"], globs):
        s["global"] = g
    with open(path, "w") as f:
        f.write(json.dumps(doc, allow_nan=False, separators=(",", ":")))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "testdata", "golden", "prodigy"))
    ap.add_argument("--only", default=None, help="comma-separated case names (for debugging)")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    sums_dir = os.path.join(out_dir, "f64_sums")
    os.makedirs(sums_dir, exist_ok=True)

    initial, grads = G.make_inputs()
    cases = build_cases()
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c["name"] in keep]
    else:
        for d in (out_dir, sums_dir):
            for fn in os.listdir(d):
                if fn.endswith(".json"):
                    os.remove(os.path.join(d, fn))
    torch_version = torch.__version__.split("+")[0]
    spreads, finals, kept = {}, {}, {}
    for case in cases:
        snaps, globs = run_with_globals(case, initial, grads, ProdigyRunner)
        snaps2, globs2 = run_with_globals(case, initial, grads, ProdigyRunnerF64Sums)
        for s in (snaps, snaps2):
            G.check_buffers(case, s)
            G.sanity_checks(case, s, initial, grads)
        snaps3, _ = run_with_globals(case, initial, grads, ProdigyRunnerExactSums)
        sp = OrderedDict((a[0], snapshot_spread(a, b)) for a, b in zip(snaps, snaps2))
        sp64 = OrderedDict((a[0], snapshot_spread(a, b)) for a, b in zip(snaps2, snaps3))
        spreads[case["name"]] = (sp, sp64)
        finals[case["name"]] = globs[-1]["d"]

        def prefix(spread_by_step):
            # Snapshots up to the first one where the two runs part (they stay apart after).
            out = []
            for i, a in enumerate(snaps):
                if spread_by_step[a[0]] > WELL_CONDITIONED:
                    break
                out.append(i)
            return out

        good, good64 = prefix(sp), prefix(sp64)
        kept[case["name"]] = ([snaps[i][0] for i in good], [snaps[i][0] for i in good64])
        spread = OrderedDict([
            ("method", "prodigyopt (float32 sums) vs prodigyopt with float64 sums"),
            ("metric", "max |a-b|/max(|b|,1e-6) over params and state"),
            ("by_step", OrderedDict((str(k), float("%.3g" % v)) for k, v in sp.items())),
            ("kept_snapshots_max", WELL_CONDITIONED)])
        write_case(os.path.join(out_dir, case["name"] + ".json"), case, initial,
                   [snaps[i] for i in good], [globs[i] for i in good],
                   "prodigyopt.Prodigy (prodigyopt %s)" % PRODIGY_VERSION,
                   "prodigyopt %s (torch %s)" % (PRODIGY_VERSION, torch_version), spread)
        spread64 = OrderedDict([
            ("method", "prodigyopt with float64 sums: torch.dot / sum vs math.fsum"),
            ("metric", "max |a-b|/max(|b|,1e-6) over params and state"),
            ("by_step", OrderedDict((str(k), float("%.3g" % v)) for k, v in sp64.items())),
            ("kept_snapshots_max", WELL_CONDITIONED)])
        write_case(os.path.join(sums_dir, case["name"] + ".json"), case, initial,
                   [snaps2[i] for i in good64], [globs2[i] for i in good64],
                   "prodigyopt.Prodigy's source (prodigyopt %s) with torch.dot(g, p0 - p) and "
                   "s.abs().sum() in float64" % PRODIGY_VERSION,
                   "prodigyopt %s, float64 sums (torch %s)" % (PRODIGY_VERSION, torch_version),
                   spread64)
        print("wrote %s (d = %.4g, kept %s / %s)" % (
            case["name"], globs[-1]["d"], kept[case["name"]][0], kept[case["name"]][1]),
            file=sys.stderr)
    if not args.only:
        write_readme(out_dir, cases, spreads, finals, kept)
    print("%d cases" % len(cases), file=sys.stderr)


if __name__ == "__main__":
    main()
