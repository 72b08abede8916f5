#!/usr/bin/env python3
"""Generate the golden trajectories of the optimizers that need the matrix (Adafactor, Muon)
in testdata/golden/matrix/.

Reference: torch.optim.Adafactor (torch 2.15, CPU, float32, single-tensor path foreach=False)
on real nn.Parameters of several shapes (matrices, a 3-D tensor, vectors, a scalar), one
opt.step() per step.  The inputs come from the RNG of scripts/gen_golden.py (splitmix64, seed
42) drawn in the tensor order of each file's "tensors" list; the format is that of
testdata/golden/README.md plus a "shape" and a "scale" per tensor (see
testdata/golden/matrix/README.md, which this script also writes).

Usage:
    pip install -r scripts/requirements-golden.txt
    python scripts/gen_golden_matrix.py            # writes testdata/golden/matrix/
    python scripts/gen_golden_matrix.py --out DIR
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden as gg  # noqa: E402  (sets MKL_ENABLE_INSTRUCTIONS=AVX2, one torch thread)

import numpy as np  # noqa: E402
import torch  # noqa: E402

STEPS = gg.STEPS
SNAPSHOT_STEPS = gg.SNAPSHOT_STEPS
SEED = gg.SEED

# (name, shape, gradient scale).  "w3" follows gen_golden.py's special rules: initial values 0,
# every third gradient element 0, the sign flipping every step, and no gradient on steps
# k % 10 == 7.
ADAFACTOR_TENSORS = [
    ("m0", [12, 20], 1.0),
    ("v1", [16], 2.0**-20),
    ("t2", [2, 3, 5], 2.0**16),
    ("w3", [3, 3], 1.0),
    ("s4", [], 1.0),
    ("m5", [1, 7], 1.0),
]


# Muon takes matrices only: a wide one, a tall one (transposed by the iteration), a square one
# of huge gradients, and w3.
MUON_TENSORS = [
    ("m0", [12, 20], 1.0),
    ("m1", [16, 6], 2.0**-20),
    ("m2", [8, 8], 2.0**16),
    ("w3", [3, 3], 1.0),
]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def make_inputs(tensors):
    rng = gg.SplitMix64(SEED)
    initial = OrderedDict()
    for name, shape, _scale in tensors:
        vals = np.array([rng.uniform() for _ in range(numel(shape))], dtype=np.float32)
        if name == "w3":
            vals = np.zeros_like(vals)
        initial[name] = vals.reshape(shape)
    grads = [None]
    for k in range(1, STEPS + 1):
        gk = OrderedDict()
        for name, shape, scale in tensors:
            n = numel(shape)
            g = np.empty(n, dtype=np.float32)
            for j in range(n):
                v = np.float32(rng.uniform() * np.float32(scale))
                if name == "w3":
                    if j % 3 == 0:
                        v = np.float32(0.0)
                    elif k % 2 == 1:
                        v = -v
                g[j] = v
            gk[name] = None if (name == "w3" and gg.w3_grad_missing(k)) else g.reshape(shape)
        grads.append(gk)
    return initial, grads


def cfg_adafactor(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                  maximize=False):
    return OrderedDict(lr=lr, beta2_decay=beta2_decay, eps=list(eps), d=d,
                       weight_decay=weight_decay, maximize=maximize)


def cfg_muon(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
             ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
             adjust_lr_fn="original", ns_dtype="float32"):
    return OrderedDict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                       ns_coefficients=list(ns_coefficients), eps=eps, ns_steps=ns_steps,
                       adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype)


def build_cases():
    t = ADAFACTOR_TENSORS
    names = [n for n, _, _ in t]
    mats = [n for n, s, _ in t if len(s) >= 2]
    vecs = [n for n, s, _ in t if len(s) < 2]
    one = lambda c: [(names, c)]
    return [
        ("adafactor_plain", "adafactor", t, one(cfg_adafactor())),
        ("adafactor_wd0.1_max", "adafactor", t, one(cfg_adafactor(weight_decay=0.1,
                                                                   maximize=True))),
        ("adafactor_eps1e-20_d2_b2d-0.5", "adafactor", t,
         one(cfg_adafactor(eps=(1e-20, 1e-3), d=2.0, beta2_decay=-0.5))),
        ("adafactor_lr0.5_wd0.01", "adafactor", t, one(cfg_adafactor(lr=0.5, weight_decay=0.01))),
        ("adafactor_groups", "adafactor", t,
         [(mats, cfg_adafactor()), (vecs, cfg_adafactor(lr=0.05, weight_decay=0.1))]),
    ] + muon_cases()


def muon_cases():
    t = MUON_TENSORS
    names = [n for n, _, _ in t]
    one = lambda c: [(names, c)]
    return [
        ("muon_f32_plain", "muon", t, one(cfg_muon(lr=0.02))),
        ("muon_f32_nonesterov_wd0", "muon", t, one(cfg_muon(lr=0.02, nesterov=False,
                                                              weight_decay=0.0))),
        ("muon_f32_match_rms_adamw", "muon", t, one(cfg_muon(lr=0.02,
                                                               adjust_lr_fn="match_rms_adamw"))),
        ("muon_f32_spectral_m0.9_ns3", "muon", t,
         one(cfg_muon(lr=0.02, adjust_lr_fn="spectral_unclamped", momentum=0.9, ns_steps=3))),
        ("muon_f32_groups", "muon", t, [(names[:2], cfg_muon(lr=0.02)),
                                        (names[2:], cfg_muon(lr=0.005, weight_decay=0.0))]),
        ("muon_bf16_plain", "muon", t, one(cfg_muon(lr=0.02, ns_dtype="bfloat16"))),
        ("muon_bf16_match_rms_adamw", "muon", t,
         one(cfg_muon(lr=0.02, ns_dtype="bfloat16", adjust_lr_fn="match_rms_adamw"))),
    ]


def torch_kwargs(opt, cfg):
    kw = dict(cfg)
    if opt == "adafactor":
        kw["eps"] = tuple(kw["eps"])
    if opt == "muon":
        kw["ns_coefficients"] = tuple(kw["ns_coefficients"])
        assert kw.pop("ns_dtype") in ("float32", "bfloat16")
    return kw


# ------------------------------------------------------------------------------------------------
# Muon with the Newton-Schulz iteration in another arithmetic ("torch ops (manual)")
# ------------------------------------------------------------------------------------------------

_REAL_ZEROPOWER = torch.optim._muon._zeropower_via_newtonschulz


def zeropower_emulated(grad, ns_coefficients, ns_steps, eps, dtype):
    """torch/optim/_muon.py `_zeropower_via_newtonschulz`, line for line, in float32, or in
    float32 with every result rounded to `dtype` (bf16 emulated: products summed in f32 from
    the bf16 values, as downhill's ns_dtype="bfloat16" does)."""
    rnd = (lambda t: t) if dtype == "float32" else (lambda t: t.to(torch.bfloat16).float())
    if dtype == "float32_via_f64":  # another valid f32 execution: each op in f64, then rounded
        return zeropower_emulated(grad.double(), ns_coefficients, ns_steps, eps,
                                  "float64").float()
    if dtype == "float64":
        rnd = lambda t: t.float().double()
        grad = grad.double()
    a, b, c = ns_coefficients
    ortho_grad = rnd(grad.to(dtype=grad.dtype if dtype == "float64" else torch.float32,
                             copy=True))
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad = rnd(ortho_grad.div(rnd(rnd(ortho_grad.norm()).clamp(min=rnd(torch.tensor(eps))))))
    for _ in range(ns_steps):
        gram_matrix = rnd(ortho_grad @ ortho_grad.T)
        gram_update = rnd(torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c))
        ortho_grad = rnd(torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a))
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


class use_zeropower:
    """Runs torch.optim.Muon with its iteration replaced (None: the real bf16 one)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        if self.dtype is not None:
            d = self.dtype
            torch.optim._muon._zeropower_via_newtonschulz = (
                lambda g, co, st, ep: zeropower_emulated(g, co, st, ep, d))

    def __exit__(self, *exc):
        torch.optim._muon._zeropower_via_newtonschulz = _REAL_ZEROPOWER


def check_emulation_is_faithful():
    """The lines zeropower_emulated follows, run on bf16 tensors, give the real iteration bit
    for bit: the emulation changes the arithmetic, not the algorithm."""
    g = torch.from_numpy(make_inputs(MUON_TENSORS)[1][1]["m0"].copy())
    for t in (g, g.T.contiguous()):
        real = _REAL_ZEROPOWER(t, (3.4445, -4.775, 2.0315), 5, 1e-7)
        # the same lines with bf16 tensors throughout: torch's own code path
        a, b, c = 3.4445, -4.775, 2.0315
        x = t.to(dtype=torch.bfloat16, copy=True)
        if t.size(0) > t.size(1):
            x = x.T
        x.div_(x.norm().clamp(min=1e-7))
        for _ in range(5):
            gm = x @ x.T
            x = torch.addmm(x, torch.addmm(gm, gm, gm, beta=b, alpha=c), x, beta=a)
        if t.size(0) > t.size(1):
            x = x.T
        assert torch.equal(real, x)


TORCH_CLASSES = {"adafactor": torch.optim.Adafactor, "muon": torch.optim.Muon}
BUFFERS = {"adafactor": lambda shape: ["row_var", "col_var"] if len(shape) >= 2 else ["variance"],
           "muon": lambda shape: ["momentum_buffer"]}


class Runner:
    def __init__(self, opt, tensors, groups, initial, foreach=False):
        self.params = OrderedDict((n, torch.nn.Parameter(torch.from_numpy(initial[n].copy())))
                                  for n, _, _ in tensors)
        gs = []
        for names, cfg in groups:
            g = torch_kwargs(opt, cfg)
            g["params"] = [self.params[n] for n in names]
            gs.append(g)
        if opt == "muon":  # no foreach path
            self.opt = TORCH_CLASSES[opt](gs, **torch_kwargs(opt, groups[0][1]))
        else:
            self.opt = TORCH_CLASSES[opt](gs, foreach=foreach, **torch_kwargs(opt, groups[0][1]))
            for g in self.opt.param_groups:
                assert g["foreach"] is foreach
        self.counts = {n: 0 for n, _, _ in tensors}

    def step(self, grads):
        for n, p in self.params.items():
            p.grad = None if grads[n] is None else torch.from_numpy(grads[n].copy())
            self.counts[n] += grads[n] is not None
        self.opt.step()

    def snapshot(self):
        params, state, counts = OrderedDict(), OrderedDict(), OrderedDict()
        for n, p in self.params.items():
            params[n] = p.detach().numpy().copy().reshape(-1)
            st = self.opt.state.get(p, {})
            state[n] = OrderedDict((k, v.detach().numpy().copy().reshape(-1))
                                   for k, v in st.items() if k != "step" and v is not None)
            if "step" in st:
                assert st["step"].item() == self.counts[n]
            counts[n] = self.counts[n]
        return params, state, counts


def run(opt, tensors, groups, initial, grads, foreach=False, zeropower=None):
    r = Runner(opt, tensors, groups, initial, foreach)
    snaps = []
    for k in range(1, STEPS + 1):
        with use_zeropower(zeropower):
            r.step(grads[k])
        if k in SNAPSHOT_STEPS:
            snaps.append((k,) + r.snapshot())
    return snaps


def spread(a, b, method="torch.optim foreach=True vs foreach=False"):
    e1 = eall = 0.0
    for (k, pa, sa, _), (kb, pb, sb, _) in zip(a, b):
        assert k == kb
        for n in pa:
            errs = [gg.max_rel_err(pb[n], pa[n])] + [gg.max_rel_err(sb[n][x], sa[n][x])
                                                     for x in sa[n]]
            if k == 1:
                e1 = max(e1, max(errs))
            eall = max(eall, max(errs))
    return OrderedDict([("method", method),
                        ("metric", "max |a-b|/max(|b|,1e-6) over params and state"),
                        ("step1", float("%.3g" % e1)), ("all_steps", float("%.3g" % eall))])


def case_json(name, opt, tensors, groups, initial, snaps, spr, source, reference, tolerance):
    doc = OrderedDict()
    doc["case"] = name
    doc["optimizer"] = opt
    doc["source"] = source
    doc["versions"] = gg.versions()
    doc["reference"] = reference
    doc["reference_spread"] = spr
    if tolerance is not None:
        doc["tolerance"] = tolerance
    doc["groups"] = [OrderedDict([("params", list(ns)), ("config", cfg)]) for ns, cfg in groups]
    doc["tensors"] = [OrderedDict([("name", n), ("len", numel(s)), ("shape", list(s)),
                                   ("scale", sc)]) for n, s, sc in tensors]
    doc["seed"] = SEED
    doc["steps"] = STEPS
    doc["w3_grad_missing_steps"] = [k for k in range(1, STEPS + 1) if gg.w3_grad_missing(k)]
    doc["initial"] = OrderedDict((n, gg.f32list(initial[n])) for n, _, _ in tensors)
    out = []
    for k, params, state, counts in snaps:
        s = OrderedDict()
        s["step"] = k
        s["params"] = OrderedDict((n, gg.f32list(params[n])) for n, _, _ in tensors)
        st = OrderedDict()
        for n, shape, _ in tensors:
            want = BUFFERS[opt](shape)
            assert sorted(state[n]) == sorted(want), (name, n, list(state[n]), want)
            st[n] = OrderedDict((b, gg.f32list(state[n][b])) for b in want)
        s["state"] = st
        s["step_counts"] = OrderedDict((n, int(counts[n])) for n, _, _ in tensors)
        out.append(s)
    doc["snapshots"] = out
    return doc


README = """\
# Golden trajectories of the optimizers that need the matrix

Generated by `scripts/gen_golden_matrix.py` from the real `torch.optim.Adafactor` and
`torch.optim.Muon`; do not edit by hand. The format, the RNG, the tolerance and the rounding notes are those of
`../README.md`, with two additions (backward compatible: `tests/golden.rs` reads both):

* every entry of `"tensors"` has a `"shape"` (the parameter's shape; `"len"` is its number of
  elements) and a `"scale"` (its gradient scale). Initial values and gradients are drawn in the
  order of this list, element by element in row-major order, `p = u` and `g = u * scale`; a
  tensor named `w3` keeps the special rules of `../README.md` (initial 0, every third gradient 0,
  the sign flipping every step, no gradient on the steps of `"w3_grad_missing_steps"`), whatever
  its shape.
* state buffers are flattened in row-major order and have the shapes PyTorch gives them
  (Adafactor: `row_var` `[..., R, 1]` and `col_var` `[..., 1, C]` for a tensor of two or more
  dimensions, `variance` of the parameter's shape otherwise).

Versions: {versions}.

References (CPU, float32 parameters, one `opt.step()` per step):
* Adafactor: `torch.optim.Adafactor(foreach=False)`; `reference_spread` is torch's
  `foreach=True` path against the single-tensor one.
* Muon, `ns_dtype: "bfloat16"`: the real `torch.optim.Muon`, whose Newton-Schulz iteration runs
  in bf16. `reference_spread` is its distance to the same optimizer with the iteration replaced by
  `zeropower_emulated(dtype="bfloat16")`: every operation's result rounded to bf16 as torch's is,
  but the products summed in f32 over bf16 values in another order (what downhill does).
* Muon, `ns_dtype: "float32"` (`"source": "torch ops (manual)"`): `torch.optim.Muon` with
  `_zeropower_via_newtonschulz` replaced by the same lines in float32 (`zeropower_emulated`);
  the generator first checks that those lines, run on bf16 tensors, are the real iteration bit
  for bit. PyTorch has no float32 mode; this is downhill's default.

## Tolerance

Every file here carries its own `"tolerance"` (`{{"step1": ..., "all_steps": ...}}`, relative,
params and state), read by `tests/golden.rs` instead of the core's `1e-6` / `1e-5`:

* Adafactor: the core's `1e-6` at step 1; through step 200, four times the file's
  `reference_spread`, rounded up to 1, 2 or 5 times a power of ten (between `1e-4` and `2e-3`).
  Why: its norms and means are f32 sums over a whole row, column or tensor. downhill sums the
  norms in ATen's order (eight f32 lanes over a contiguous run, rows in order down a column:
  measured bit for bit against torch on this machine), but not the mean of `row_var` (ATen's
  order for that reduction was not reproduced; downhill sums it in f64 and rounds once). One
  ulp of that mean scales a whole step by one ulp, and where a step of `lr · RMS(p) · |U|`
  (up to about 0.05 here) lands on a parameter passing near zero, one ulp of the step is a
  relative error of 1e-5 to 1e-4 in the metric. PyTorch's own two paths (`foreach=True` and
  the single-tensor loop, which differ in nothing but such reduction orders) disagree by the
  `reference_spread` of each file, 1.9e-5 to 2.6e-4: a tolerance below that would demand
  bit-identical reductions rather than PyTorch's math. Step 1 matches to 1e-6 in every case,
  and the state (`row_var`, `col_var`, `variance`) matches to 1e-5 at every snapshot.
* Muon float32: the momentum buffer is element-wise (exact); the iteration's matrix products
  (MKL's sgemm here, the `gemm` crate in downhill) sum in different orders, which moves the
  orthogonalised update by a few f32 ulps; the parameters move by `lr` times that, and where a
  parameter passes near zero (the metric's floor is 1e-6) a few ulps of a step of `lr · |O|`
  are a relative error above 1e-5. These files carry a `"tolerance"`: twice the measured
  `reference_spread` (the iteration against the same lines computed in float64 and rounded to
  float32 after every operation: another valid f32 execution), rounded up to 1, 2 or 5 times a
  power of ten.
* Muon bfloat16: bf16 keeps 8 significant bits (relative spacing 2^-8 = 3.9e-3). Two valid
  executions of the same bf16 iteration (torch's, and the emulation over f32 products) round a
  few elements of every matrix to a neighbouring bf16 value, and the iteration carries those
  differences on: the updates differ by about a bf16 ulp, element by element, and over 200 steps
  the parameters by `lr` times the sum of those. The tolerance of these files is twice the
  measured `reference_spread` (step 1 and all steps), rounded up to 1, 2 or 5 times a power of
  ten. It is looser than the core's because bf16 is: a tighter one would only hold for an
  implementation that sums its products in oneDNN's order. The state (the momentum buffer) does
  not go through the iteration and stays within it easily. The iteration alone is checked
  against a float64 reference in `crates/downhill/src/optim/muon.rs`
  (`newton_schulz_matches_a_float64_reference`).

## Cases ({n_cases})

| case | optimizer | source | tensors | groups | spread | tolerance (step 1 / all) |
|------|-----------|--------|---------|--------|--------|-----------|
{rows}
"""


def nice_up(x):
    """The smallest of 1, 2, 5 times a power of ten that is >= x (and >= 1e-5)."""
    import math
    x = max(x, 1e-5)
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10.0**e >= x * (1 - 1e-12):
            return float("%g" % (m * 10.0**e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "testdata", "golden", "matrix"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for fn in os.listdir(args.out):
        if fn.endswith(".json"):
            os.remove(os.path.join(args.out, fn))
    check_emulation_is_faithful()
    rows = []
    cases = build_cases()
    for name, opt, tensors, groups in cases:
        initial, grads = make_inputs(tensors)
        tolerance = None
        if opt == "adafactor":
            snaps = run(opt, tensors, groups, initial, grads)
            other = run(opt, tensors, groups, initial, grads, foreach=True)
            spr = spread(snaps, other)
            source, reference = gg.torch_source(), "torch.optim.Adafactor(foreach=False)"
            # The core's at step 1; then four times PyTorch's own foreach-vs-single spread
            # (see README.md), rounded up to 1, 2 or 5 times a power of ten.
            tolerance = OrderedDict([("step1", 1e-6),
                                     ("all_steps", nice_up(4 * spr["all_steps"]))])
        elif groups[0][1]["ns_dtype"] == "float32":
            snaps = run(opt, tensors, groups, initial, grads, zeropower="float32")
            other = run(opt, tensors, groups, initial, grads, zeropower="float32_via_f64")
            spr = spread(snaps, other, "the float32 iteration vs the same with every operation "
                                       "in float64, rounded to float32")
            source = "torch ops (manual)"
            reference = ("torch.optim.Muon with _zeropower_via_newtonschulz in float32 "
                         "(gen_golden_matrix.py zeropower_emulated)")
        else:
            snaps = run(opt, tensors, groups, initial, grads)
            other = run(opt, tensors, groups, initial, grads, zeropower="bfloat16")
            spr = spread(snaps, other, "torch.optim.Muon (bf16) vs its iteration with bf16 "
                                       "rounding emulated over f32 products")
            source, reference = gg.torch_source(), "torch.optim.Muon"
        if opt == "muon":
            # Twice the measured distance between two valid executions of the iteration in
            # the same arithmetic (see README.md), rounded up to 1, 2 or 5 times a power of ten.
            tolerance = OrderedDict([("step1", nice_up(2 * spr["step1"])),
                                     ("all_steps", nice_up(2 * spr["all_steps"]))])
        doc = case_json(name, opt, tensors, groups, initial, snaps, spr, source, reference,
                        tolerance)
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            f.write(json.dumps(doc, allow_nan=False, separators=(",", ":")))
            f.write("\n")
        shapes = ", ".join("%s %s" % (n, list(s)) for n, s, _ in tensors)
        tol = "1e-6 / 1e-5" if tolerance is None else "%g / %g" % (tolerance["step1"],
                                                                   tolerance["all_steps"])
        rows.append("| %s | %s | %s | %s | %d | %s | %s |" % (
            name, opt, "manual" if source.endswith("(manual)") else "torch", shapes, len(groups),
            "-" if spr is None else "%.2g" % spr["all_steps"], tol))
        print(name, "spread", spr and spr["all_steps"], "tolerance", tol)
    vs = ", ".join("%s %s" % kv for kv in gg.versions().items())
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(versions=vs, n_cases=len(cases), rows="\n".join(rows)))


if __name__ == "__main__":
    main()
