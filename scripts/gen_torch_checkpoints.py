#!/usr/bin/env python3
"""Generates testdata/torch/: torch.optim checkpoints for downhill-torch's tests, both ways.

1. PyTorch to downhill: for every case, torch trains N steps and saves `state_dict()` with
   torch.save (`<case>.pt`), then continues M steps; `<case>.json` holds the parameters after N
   steps and torch's parameters and state after N + M. The Rust test
   (crates/downhill-torch/tests/from_torch.rs) loads the .pt into downhill, continues the same M
   steps and compares.
2. downhill to PyTorch: `cargo run --release -p downhill-torch --example reverse_fixtures`
   trains downhill N steps per case and writes `from_downhill/<case>.pt` (downhill_torch::save)
   and `from_downhill/<case>.json` (parameters after N, downhill's parameters and state after
   N + M). This script then loads each file with `torch.load(weights_only=True)`, hands it to
   `load_state_dict` of a fresh torch optimizer, continues the M steps and writes what it found
   to `from_downhill/report.json`, which the Rust test checks.

Inputs are exact in float32 (no RNG): parameters w (2x3) and b (3) start at
w[j] = (j - 2.5) / 4 and b[j] = (j + 1) / 8, and the gradient of element j of parameter i
(w: 0, b: 1) at step t (1-based) is ((7t + 3j + 5i) mod 17 - 8) / 8 * 2^-(t mod 3); the Rust
side computes the same numbers (crates/downhill-torch/tests/fixture/mod.rs).

MKL_ENABLE_INSTRUCTIONS=AVX2 keeps torch's sqrt exact on AVX-512 machines, as for the goldens
(testdata/golden/README.md).

Usage: pip install -r scripts/requirements-torch-interop.txt
       python scripts/gen_torch_checkpoints.py       # from the repository root
"""

import os

os.environ["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"

import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "testdata" / "torch"
N, M = 3, 4
SHAPES = {"w": (2, 3), "b": (3,)}

# name, torch class, per-group kwargs (group params by name), whether groups carry param_names
CASES = [
    ("sgd_momentum", "SGD", [(["w", "b"], dict(lr=0.1, momentum=0.9, weight_decay=0.01))], True),
    ("sgd_nesterov_groups", "SGD",
     [(["w"], dict(lr=0.1, momentum=0.9, nesterov=True)), (["b"], dict(lr=0.01, momentum=0.5))], False),
    ("adagrad", "Adagrad",
     [(["w", "b"], dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1))], True),
    ("rmsprop_centered_momentum", "RMSprop",
     [(["w", "b"], dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01))], True),
    ("adam_amsgrad", "Adam", [(["w", "b"], dict(lr=0.01, amsgrad=True, weight_decay=0.1))], True),
    ("adamw", "AdamW", [(["w", "b"], dict(lr=0.01, weight_decay=0.1))], True),
    ("adamax", "Adamax", [(["w", "b"], dict(lr=0.01))], True),
    ("nadam_decoupled", "NAdam",
     [(["w", "b"], dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True))], True),
    ("radam", "RAdam", [(["w", "b"], dict(lr=0.01, weight_decay=0.01))], True),
    ("adadelta", "Adadelta", [(["w", "b"], dict(lr=1.0, rho=0.9, weight_decay=0.01))], True),
    # Sign flips, growth, and step sizes at both bounds (w's at its minimum from step 2 on,
    # b's at its maximum on step 1); the second group maximizes.
    ("rprop_groups", "Rprop",
     [(["w"], dict(lr=0.01, etas=(0.4, 1.3), step_sizes=(5e-3, 0.015))),
      (["b"], dict(lr=0.02, step_sizes=(1e-3, 0.011), maximize=True))], True),
    # t0 = 1: the saved mu is 1/2 and averaging runs through the continuation.
    ("asgd_averaging", "ASGD", [(["w", "b"], dict(lr=0.05, lambd=0.01, alpha=0.75, t0=1.0,
                                                  weight_decay=0.01))], True),
]


def initial():
    w = torch.tensor([(j - 2.5) / 4 for j in range(6)], dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([(j + 1) / 8 for j in range(3)], dtype=torch.float32)
    return {"w": w, "b": b}


def grad(name, t):
    i = 0 if name == "w" else 1
    n = 1
    for d in SHAPES[name]:
        n *= d
    vals = [((7 * t + 3 * j + 5 * i) % 17 - 8) / 8 * 2.0 ** -(t % 3) for j in range(n)]
    return torch.tensor(vals, dtype=torch.float32).reshape(SHAPES[name])


def build(cls, groups, named, values):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in values.items()}
    gs = []
    for names, kw in groups:
        g = dict(kw)
        g["params"] = [params[n] for n in names]
        if named:
            g["param_names"] = list(names)
        gs.append(g)
    return params, getattr(torch.optim, cls)(gs, foreach=False)


def run(params, opt, steps):
    for t in steps:
        for k, p in params.items():
            p.grad = grad(k, t)
        opt.step()


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def snapshot(params, opt, groups):
    order = [n for names, _ in groups for n in names]
    state = {}
    for k in order:
        st = opt.state.get(params[k], {})
        state[k] = {
            key: (float(v.item()) if v.dim() == 0 else flat(v)) if torch.is_tensor(v) else v
            for key, v in st.items()
            if v is not None
        }
    return {"params": {k: flat(params[k]) for k in order}, "state": state}


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__}


def dump(path, obj):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def rel_err(a, b):
    return max((abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b)), default=0.0)


class Evil:
    """Pickles as a call of `fn(arg)`: what a malicious checkpoint does."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def bad_files():
    """Files downhill must refuse with a clear error (crates/downhill-torch/tests/bad_files.rs)."""
    bad = OUT / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    params, opt = build("Adafactor", [(["w", "b"], dict(lr=0.01))], True, initial())
    run(params, opt, range(1, 2))
    torch.save(opt.state_dict(), bad / "adafactor.pt")  # an optimizer downhill does not map
    params, opt = build("Adam", [(["w", "b"], dict(lr=0.01, differentiable=True))], True, initial())
    torch.save(opt.state_dict(), bad / "adam_differentiable.pt")
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.Adam([p], foreach=False)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    torch.save(opt.state_dict(), bad / "adam_float64.pt")  # float64 state
    torch.save(torch.nn.Linear(3, 2).state_dict(), bad / "model_weights.pt")  # not an optimizer
    # Malicious pickles: loading them with weights_only=False would run the command. The marker
    # file named in them must never appear when downhill reads them.
    marker = "/tmp/downhill-torch-pwned"
    torch.save({"state": {}, "param_groups": [], "x": Evil(os.system, f"touch {marker}")},
               bad / "os_system.pt")
    torch.save({"state": {}, "param_groups": [], "x": Evil(eval, f"open('{marker}', 'w')")},
               bad / "builtins_eval.pt")


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    bad_files()
    for name, cls, groups, named in CASES:
        params, opt = build(cls, groups, named, initial())
        run(params, opt, range(1, N + 1))
        after_n = {k: flat(v) for k, v in params.items()}
        torch.save(opt.state_dict(), OUT / f"{name}.pt")
        run(params, opt, range(N + 1, N + M + 1))
        dump(OUT / f"{name}.json", {
            "case": name, "torch_class": cls, "n": N, "m": M,
            "groups": [names for names, _ in groups], "named": named,
            "params_after_n": after_n, "after": snapshot(params, opt, groups),
            "versions": versions(),
        })
        print(f"torch -> downhill: {name}")

    rev = OUT / "from_downhill"
    subprocess.run(
        ["cargo", "run", "--release", "--quiet", "-p", "downhill-torch", "--example",
         "reverse_fixtures", "--", str(OUT)],
        cwd=ROOT, check=True)
    report = {"versions": versions(), "n": N, "m": M, "cases": {}}
    for name, cls, groups, named in CASES:
        expect = json.loads((rev / f"{name}.json").read_text())
        sd = torch.load(rev / f"{name}.pt", weights_only=True)
        values = {k: torch.tensor(v, dtype=torch.float32).reshape(SHAPES[k])
                  for k, v in expect["params_after_n"].items()}
        params, opt = build(cls, groups, named, values)
        opt.load_state_dict(sd)
        run(params, opt, range(N + 1, N + M + 1))
        got = snapshot(params, opt, groups)
        err_p = max(rel_err(got["params"][k], expect["after"]["params"][k]) for k in got["params"])
        err_s = 0.0
        keys_ok = True
        for k, st in expect["after"]["state"].items():
            if set(st) != set(got["state"][k]):
                keys_ok = False
            for key, v in st.items():
                g = got["state"][k].get(key)
                if g is None:
                    continue
                a, b = (g if isinstance(g, list) else [g]), (v if isinstance(v, list) else [v])
                err_s = max(err_s, rel_err(a, b))
        report["cases"][name] = {
            "torch_class": cls, "loaded_weights_only": True, "state_keys_match": keys_ok,
            "max_rel_err_params": err_p, "max_rel_err_state": err_s,
        }
        print(f"downhill -> torch: {name}: params {err_p:.2e}, state {err_s:.2e}, keys ok {keys_ok}")
    dump(rev / "report.json", report)
    bad = [n for n, r in report["cases"].items()
           if not r["state_keys_match"] or r["max_rel_err_params"] > 1e-6 * M
           or r["max_rel_err_state"] > 1e-6 * M]
    if bad:
        sys.exit(f"torch does not continue downhill's checkpoints within tolerance: {bad}")


if __name__ == "__main__":
    main()
