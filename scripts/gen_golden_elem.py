#!/usr/bin/env python3
"""Golden trajectories of Rprop, ASGD, ADOPT and AdEMAMix (testdata/golden/elem/).

Reference implementations (versions pinned in scripts/requirements-golden.txt):
  * PyTorch  torch.optim.{Rprop, ASGD} on CPU, float32, single-tensor path (foreach=False).
  * optax    optax.contrib.{adopt, ademamix} on the JAX CPU backend, float32, eager.

Inputs, file format and metric are those of scripts/gen_golden.py (whose helpers this script
imports: the same RNG, tensors, gradients, runners and JSON writer); see
testdata/golden/README.md. This script writes only into testdata/golden/elem/, its own
README.md included, so that the two generators never overwrite each other's files.

Usage:
    pip install -r scripts/requirements-golden.txt
    python scripts/gen_golden_elem.py            # writes testdata/golden/elem/
    python scripts/gen_golden_elem.py --out DIR  # write somewhere else (e.g. to diff)
"""

import argparse
import json
import math
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as G  # noqa: E402  (sets the MKL/JAX environment before importing torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import optax  # noqa: E402
from optax.contrib._ademamix import ScaleByAdemamixState  # noqa: E402

ALL, G0, G1 = G.ALL, G.G0, G.G1
fmt, name_of = G.fmt, G.name_of


# ------------------------------------------------------------------------------------------------
# Configs (downhill names; every field written out)
# ------------------------------------------------------------------------------------------------

def cfg_rprop(lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False):
    return OrderedDict(lr=lr, etas=list(etas), step_sizes=list(step_sizes), maximize=maximize)


def cfg_asgd(lr=0.01, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False):
    return OrderedDict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                       maximize=maximize)


def cfg_adopt(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, nesterov=False, use_clipping=True):
    return OrderedDict(lr=lr, betas=list(betas), eps=eps, nesterov=nesterov,
                       use_clipping=use_clipping)


def cfg_ademamix(lr=1e-3, betas=(0.9, 0.999), beta3=0.9999, alpha=5.0, eps=1e-8, eps_root=0.0,
                 weight_decay=0.0, t_alpha=0, t_beta3=0):
    return OrderedDict(lr=lr, betas=list(betas), beta3=beta3, alpha=alpha, eps=eps,
                       eps_root=eps_root, weight_decay=weight_decay, t_alpha=t_alpha,
                       t_beta3=t_beta3)


def build_cases():
    cases = []

    def add(name, opt, kind, groups):
        cases.append(dict(name=name, optimizer=opt, kind=kind, groups=groups))

    # ---- Rprop: defaults, maximize, tight bounds that both clamps reach, two groups
    add("rprop_plain", "rprop", "torch", [(ALL, cfg_rprop())])
    add("rprop_max", "rprop", "torch", [(ALL, cfg_rprop(maximize=True))])
    add("rprop_etas0.3_1.5_bounds", "rprop", "torch",
        [(ALL, cfg_rprop(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)))])
    add("rprop_groups", "rprop", "torch",
        [(G0, cfg_rprop()), (G1, cfg_rprop(lr=0.1, etas=(0.4, 1.1), maximize=True))])

    # ---- ASGD: t0 small enough that the average starts (mu < 1), lambd, alpha, wd, maximize
    add("asgd_plain", "asgd", "torch", [(ALL, cfg_asgd())])
    add("asgd_max", "asgd", "torch", [(ALL, cfg_asgd(maximize=True))])
    add("asgd_wd0.1", "asgd", "torch", [(ALL, cfg_asgd(weight_decay=0.1))])
    add("asgd_t0_10", "asgd", "torch", [(ALL, cfg_asgd(t0=10.0))])
    add("asgd_t0_10_lambd0.01_alpha0.5_wd0.1_max", "asgd", "torch",
        [(ALL, cfg_asgd(t0=10.0, lambd=0.01, alpha=0.5, weight_decay=0.1, maximize=True))])
    add("asgd_groups", "asgd", "torch",
        [(G0, cfg_asgd(t0=20.0)), (G1, cfg_asgd(lr=0.05, lambd=0.001, t0=5.0))])

    # ---- ADOPT (optax.contrib.adopt)
    for nest in (False, True):
        for clip in (True, False):
            add(name_of("adopt", [nest and "nesterov", (not clip) and "noclip"]), "adopt",
                "optax", [(ALL, cfg_adopt(nesterov=nest, use_clipping=clip))])
    add("adopt_b2_0.999", "adopt", "optax", [(ALL, cfg_adopt(betas=(0.8, 0.999)))])
    add("adopt_groups", "adopt", "optax",
        [(G0, cfg_adopt()), (G1, cfg_adopt(lr=3e-3, nesterov=True))])

    # ---- AdEMAMix (optax.contrib.ademamix, warm-ups as callables of count_m2)
    add("ademamix_plain", "ademamix", "optax", [(ALL, cfg_ademamix())])
    add("ademamix_wd0.1", "ademamix", "optax", [(ALL, cfg_ademamix(weight_decay=0.1))])
    add("ademamix_eps_root", "ademamix", "optax", [(ALL, cfg_ademamix(eps_root=1e-8))])
    add("ademamix_warmup", "ademamix", "optax",
        [(ALL, cfg_ademamix(beta3=0.999, alpha=8.0, t_alpha=120, t_beta3=80))])
    add("ademamix_warmup_wd0.01", "ademamix", "optax",
        [(ALL, cfg_ademamix(beta3=0.9999, t_alpha=300, t_beta3=300, weight_decay=0.01))])
    add("ademamix_groups", "ademamix", "optax",
        [(G0, cfg_ademamix(weight_decay=0.1)), (G1, cfg_ademamix(lr=3e-3, t_alpha=50))])

    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# ------------------------------------------------------------------------------------------------
# Hooks into gen_golden's runners
# ------------------------------------------------------------------------------------------------

G.TORCH_CLASSES.update(rprop=torch.optim.Rprop, asgd=torch.optim.ASGD)
_torch_kwargs = G.torch_group_kwargs


def torch_group_kwargs(opt, cfg):
    if opt == "rprop":
        kw = dict(cfg)
        kw["etas"], kw["step_sizes"] = tuple(kw["etas"]), tuple(kw["step_sizes"])
        return kw
    if opt == "asgd":
        return dict(cfg)
    return _torch_kwargs(opt, cfg)


G.torch_group_kwargs = torch_group_kwargs
_expected = G.expected_buffers


def expected_buffers(opt, cfg):
    if opt == "rprop":
        return ["prev", "step_size"]
    if opt == "asgd":
        return ["eta", "mu", "ax"]
    if opt == "adopt":
        return ["exp_avg", "exp_avg_sq"]
    if opt == "ademamix":
        return ["exp_avg_fast", "exp_avg_slow", "exp_avg_sq"]
    return _expected(opt, cfg)


G.expected_buffers = expected_buffers
SCALAR_BUFFERS = {"eta", "mu"}


def linear_warmup(step, end, start, warmup):
    """The authors' `linear_warmup_scheduler` (apple/ml-ademamix), Python floats."""
    if step < warmup:
        a = step / float(warmup)
        return (1.0 - a) * start + a * end
    return end


def linear_hl_warmup(step, end, start, warmup):
    """The authors' `linear_hl_warmup_scheduler`: linear in the half-life, Python floats."""
    def f(beta, eps=1e-8):
        return math.log(0.5) / math.log(beta + eps) - 1

    def f_inv(t):
        return math.pow(0.5, 1 / (t + 1))

    if step < warmup:
        a = step / float(warmup)
        return f_inv((1.0 - a) * f(start) + a * f(end))
    return end


def ademamix_tx(cfg, mask=None):
    b1, b2 = cfg["betas"]
    b3, alpha = cfg["beta3"], cfg["alpha"]
    # Schedules see count_m2 (0 on the first step). They return Python floats, as the authors'
    # PyTorch schedulers do, so optax computes `1 - b3` in f64 exactly as for a constant b3
    # (eager only: `int(count)` needs a concrete value).
    if cfg["t_beta3"] > 0:
        t3 = cfg["t_beta3"]
        b3 = lambda c: linear_hl_warmup(int(c), cfg["beta3"], b1, t3)  # noqa: E731
    if cfg["t_alpha"] > 0:
        ta = cfg["t_alpha"]
        alpha = lambda c: linear_warmup(int(c), cfg["alpha"], 0.0, ta)  # noqa: E731
    return optax.contrib.ademamix(cfg["lr"], b1=b1, b2=b2, b3=b3, alpha=alpha, eps=cfg["eps"],
                                  eps_root=cfg["eps_root"], weight_decay=cfg["weight_decay"],
                                  mask=mask)


_optax_tx_for = G.optax_tx_for


def optax_tx_for(opt, cfg, wd_mask=None, tr_mask=None):
    if opt == "adopt":
        b1, b2 = cfg["betas"]
        return optax.contrib.adopt(cfg["lr"], b1=b1, b2=b2, eps=cfg["eps"],
                                   nesterov=cfg["nesterov"], use_clipping=cfg["use_clipping"])
    if opt == "ademamix":
        return ademamix_tx(cfg, mask=wd_mask)
    return _optax_tx_for(opt, cfg, wd_mask, tr_mask)


G.optax_tx_for = optax_tx_for
_build_optax = G.build_optax


def build_optax(case):
    """ADOPT and AdEMAMix groups always go through optax.multi_transform."""
    opt, groups = case["optimizer"], case["groups"]
    if opt not in ("adopt", "ademamix"):
        return _build_optax(case)
    if len(groups) == 1:
        return optax_tx_for(opt, groups[0][1]), "optax.contrib.%s" % opt
    (n0, c0), (n1, c1) = groups
    labels = {n: ("g0" if n in n0 else "g1") for n in G.TENSOR_NAMES}
    tx = optax.multi_transform({"g0": optax_tx_for(opt, c0), "g1": optax_tx_for(opt, c1)},
                               labels)
    return tx, ("optax.multi_transform({g0: optax.contrib.%s(group 0), g1: "
                "optax.contrib.%s(group 1)}, %s)" % (opt, opt, labels))


G.build_optax = build_optax


# ADOPT's state is a ScaleByAdamState (mu, nu), which gen_golden already maps to exp_avg /
# exp_avg_sq; AdEMAMix's (m1, m2, nu) is added here.
G.OPTAX_STATE_FIELDS.update({
    (ScaleByAdemamixState, "m1"): "exp_avg_fast",
    (ScaleByAdemamixState, "m2"): "exp_avg_slow",
    (ScaleByAdemamixState, "nu"): "exp_avg_sq",
})
G.OPTAX_COUNT_CLASSES = G.OPTAX_COUNT_CLASSES + (ScaleByAdemamixState,)


def uses_schedules(case):
    return any(c.get("t_alpha", 0) > 0 or c.get("t_beta3", 0) > 0 for _, c in case["groups"])


def check_buffers(case, snaps):
    pc = G.param_cfg(case)
    for _k, params, state, _counts in snaps:
        for n in G.TENSOR_NAMES:
            want = expected_buffers(case["optimizer"], pc[n])
            assert sorted(state[n].keys()) == sorted(want), (case["name"], n, state[n].keys())
            for b in want:
                exp_len = 1 if b in SCALAR_BUFFERS else len(params[n])
                assert state[n][b].shape == (exp_len,), (case["name"], n, b)


def sanity_checks(case, snaps, initial, grads):
    G.sanity_checks(case, snaps, initial, grads)
    pc = G.param_cfg(case)
    _k, p1, _st1, _c1 = snaps[0]
    for n in G.TENSOR_NAMES:
        cfg, g = pc[n], grads[1][n].astype(np.float64)
        dp = p1[n].astype(np.float64) - initial[n].astype(np.float64)
        if case["optimizer"] == "rprop":
            s = -1.0 if cfg["maximize"] else 1.0
            assert np.allclose(dp, -s * np.sign(g) * cfg["lr"], rtol=1e-5, atol=1e-9), n
        if case["optimizer"] == "adopt":
            assert np.all(dp == 0), (case["name"], n)  # step 1 only sets v


# ------------------------------------------------------------------------------------------------
# README
# ------------------------------------------------------------------------------------------------

README = """\
# Golden trajectories: Rprop, ASGD, ADOPT, AdEMAMix

Generated by `scripts/gen_golden_elem.py` (do not edit by hand) from the **real** reference
implementations, with the inputs, file format, metric and tolerance of `../README.md`
(relative error `<= 1e-6` at step 1 and `<= 1e-5` through step 200, params and state).

```
pip install -r scripts/requirements-golden.txt
python scripts/gen_golden_elem.py     # rewrites testdata/golden/elem/
```

Versions (also in every file under `"versions"`):

{versions_table}

Sources:
* `torch.optim.Rprop` / `torch.optim.ASGD`, `foreach=False`, CPU, float32, real
  `nn.Parameter`s; w3 has no gradient on steps `k % 10 == 7` as in the other torch cases.
* `optax.contrib.adopt` / `optax.contrib.ademamix` on the JAX CPU backend, float32, eager. Two
  groups are `optax.multi_transform` with one transformation per group (the call is in each
  file under `"reference"`); every tensor has a gradient on every step.

State buffers:
* rprop `prev`, `step_size`; asgd `eta`, `mu` (1-element lists: PyTorch keeps them as f32
  0-dim tensors per parameter), `ax` (the average).
* adopt `exp_avg` (optax `mu`), `exp_avg_sq` (`nu`); ademamix `exp_avg_fast` (`m1`),
  `exp_avg_slow` (`m2`), `exp_avg_sq` (`nu`).
* `step_counts`: PyTorch's `state["step"]`; optax the `count` of the state.

Config fields: rprop lr, etas, step_sizes, maximize; asgd lr, lambd, alpha, t0, weight_decay,
maximize; adopt lr, betas (optax b1, b2), eps, nesterov, use_clipping; ademamix lr, betas
(b1, b2), beta3 (b3), alpha, eps, eps_root, weight_decay, t_alpha, t_beta3.

AdEMAMix warm-ups: optax takes `b3` and `alpha` as schedules of `count_m2` (0 on the first
step) but ships none; the cases with `t_alpha` / `t_beta3` > 0 pass the authors' schedulers
(apple/ml-ademamix `linear_warmup_scheduler(step, alpha, 0, t_alpha)` and
`linear_hl_warmup_scheduler(step, beta3, beta1, t_beta3)`), computed with Python floats, as
the authors' PyTorch code does. Because the callables need a concrete step, those cases have no
`jax.jit` spread (`reference_spread: null`).

Rounding notes (what downhill reproduces):
* Rprop: all products and clamps are plain f32; `torch.sign(NaN) = 0`.
* ASGD: `eta` and `mu` are f32 tensors: `eta = f32(lr / (1 + lambd lr t)^alpha)`,
  `mu = f32(1 / max(1, t - t0))` (f64 expressions); the step is `p *= f32(1 - lambd eta)`,
  then `p = fma(-eta, g, p)`; the average `ax += (p - ax) * mu` (or `ax = p` while `mu == 1`).
* ADOPT: `b1_ = where(count > 0, b1, 1)` and `b2_ = where(count > 0, b2, 0)` are f32 arrays,
  so `1 - b` is an f32 subtraction (`1 - f32(0.9999) = 1.00016594e-4`, not
  `f32(1e-4)`); the clip bound is XLA's f32 `count ** 0.25`.
* AdEMAMix: constants are Python floats (`1 - b` in f64, then f32). `tree_bias_correction`
  is jitted (`jax.jit(inline=True)`): XLA computes `m / (1 - b ** count)` as
  `m * (1 / (1 - b ** count))` with the correctly rounded f32 power (checked for b in
  {{0.9, 0.999}}, count 1..200: all equal; the division, or a square-and-multiply power,
  differ in 44-197 of the 200 steps).

## Cases ({n_cases})

| case | optimizer | source | groups | spread |
|------|-----------|--------|--------|--------|
{case_table}
"""


def write_readme(out_dir, cases, spreads):
    vt = "\n".join("| %s | %s |" % (k, v) for k, v in G.versions().items())
    vt = "| package | version |\n|---|---|\n" + vt
    rows = []
    for c in cases:
        sp = spreads.get(c["name"])
        rows.append("| %s | %s | %s | %d | %s |" % (
            c["name"], c["optimizer"], c["kind"], len(c["groups"]),
            "-" if sp is None else "%.2g" % sp["all_steps"]))
    text = README.format(versions_table=vt, n_cases=len(cases), case_table="\n".join(rows))
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "testdata", "golden", "elem"))
    ap.add_argument("--only", default=None, help="comma-separated case names (for debugging)")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    initial, grads = G.make_inputs()
    cases = build_cases()
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c["name"] in keep]
    else:
        for fn in os.listdir(out_dir):
            if fn.endswith(".json"):
                os.remove(os.path.join(out_dir, fn))
    spreads = {}
    for case in cases:
        snaps, runner = G.run_case(case, initial, grads)
        check_buffers(case, snaps)
        sanity_checks(case, snaps, initial, grads)
        if case["kind"] == "torch":
            extra = "torch.optim.%s(foreach=False)" % G.TORCH_CLASSES[case["optimizer"]].__name__
        else:
            extra = runner.desc
        spread = None if uses_schedules(case) else G.reference_spread(case, snaps, initial,
                                                                       grads)
        spreads[case["name"]] = spread
        doc = G.case_json(case, snaps, initial, extra, spread)
        with open(os.path.join(out_dir, case["name"] + ".json"), "w") as f:
            f.write(json.dumps(doc, allow_nan=False, separators=(",", ":")))
            f.write("\n")
        print("wrote %s" % case["name"], file=sys.stderr)
    if not args.only:
        write_readme(out_dir, cases, spreads)
    print("%d cases" % len(cases), file=sys.stderr)


if __name__ == "__main__":
    main()
