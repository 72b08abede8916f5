#!/usr/bin/env python3
"""Generate the 8-bit state goldens in testdata/golden/lowbit/ from bitsandbytes' CPU backend,
and the quantization maps of crates/downhill/src/storage/maps.rs.

Reference: bitsandbytes 0.50.2 (pinned in scripts/requirements-golden.txt) with torch from PyPI,
its 8-bit blockwise optimizers (Adam8bit, AdamW8bit, Lion8bit, RMSprop8bit, Adagrad8bit,
SGD8bit) on CPU tensors: blocks of 256, one f32 absmax per block, signed dynamic map (qmap1)
for the first state, unsigned (qmap2) for the second.

Each case: one parameter of N = 4160 elements (16 full blocks and one of 64), initial values
uniform in [-1, 1), 50 gradients uniform in [-2^-7, 2^-7), all drawn from splitmix64 (the
test kit's `Rng`: seed 11 for the parameter, seed 1000 + step for gradient `step`) so that the
Rust side draws them itself. bitsandbytes takes the 50 steps; after every step the file keeps
its codes and absmax of every state, and every 10 steps its parameter.

The Rust side (crates/downhill/tests/golden_lowbit.rs) follows bitsandbytes' own parity protocol
(tests/test_optim.py): each step starts from bitsandbytes' state of the previous step (re-synced:
its codes and absmax are loaded into downhill), takes the same gradient, and compares the
dequantized state (isclose(atol=3e-3, rtol=1e-3), fewer than 20 elements off per million), the
codes (at least 99.9% equal) and the parameter (mean |error| < 6e-5, parameters run free).

The script also measures how bitsandbytes' CPU backend rounds to codes: its quantizer
(csrc/cpu_ops.cpp) rounds the normalised value to one of 65,536 levels and looks the code up in
a table, which is not always the code nearest the value; downhill follows the table (see
storage/mod.rs). Both roundings are compared with bitsandbytes' codes on random blocks.

Usage:
    pip install -r scripts/requirements-golden.txt
    python scripts/gen_golden_lowbit.py            # writes testdata/golden/lowbit/ and maps.rs
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import SplitMix64  # noqa: E402

torch.set_num_threads(1)

N = 4160
STEPS = 50
PARAM_EVERY = 10
GRAD_SCALE = np.float32(2.0 ** -7)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_file(tensors, path, metadata):
    """A safetensors file (the format is a length, a JSON header and the raw bytes; written here
    so that the script needs no other package)."""
    dt = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def uniform_vec(seed, n, scale=np.float32(1.0)):
    rng = SplitMix64(seed)
    return np.array([rng.uniform() * scale for _ in range(n)], dtype=np.float32)


def grad(step):
    return uniform_vec(1000 + step, N, GRAD_SCALE)


# (case, bitsandbytes constructor, downhill optimizer, downhill config, buffers: (downhill
# name, bitsandbytes state, absmax key))
CASES = [
    ("adam8bit", lambda p: bnb.optim.Adam8bit([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                             weight_decay=0.0, min_8bit_size=4096),
     "adam", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
     [("exp_avg", "state1", "absmax1"), ("exp_avg_sq", "state2", "absmax2")]),
    ("adam8bit_wd0.1", lambda p: bnb.optim.Adam8bit([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                                   weight_decay=0.1, min_8bit_size=4096),
     # bitsandbytes' Adam8bit decays the weights (decoupled), as downhill's
     # decoupled_weight_decay = true
     "adam", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1,
              "decoupled_weight_decay": True},
     [("exp_avg", "state1", "absmax1"), ("exp_avg_sq", "state2", "absmax2")]),
    ("adamw8bit", lambda p: bnb.optim.AdamW8bit([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                               weight_decay=1e-2, min_8bit_size=4096),
     "adamw", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2},
     [("exp_avg", "state1", "absmax1"), ("exp_avg_sq", "state2", "absmax2")]),
    ("lion8bit", lambda p: bnb.optim.Lion8bit([p], lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1,
                                             min_8bit_size=4096),
     "lion", {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.1},
     [("exp_avg", "state1", "absmax1")]),
    ("rmsprop8bit", lambda p: bnb.optim.RMSprop8bit([p], lr=1e-3, alpha=0.99, eps=1e-8,
                                                   min_8bit_size=4096),
     "rmsprop", {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8},
     [("square_avg", "state1", "absmax1")]),
    ("adagrad8bit", lambda p: bnb.optim.Adagrad8bit([p], lr=1e-2, eps=1e-10, min_8bit_size=4096),
     "adagrad", {"lr": 1e-2, "eps": 1e-10},
     [("sum", "state1", "absmax1")]),
    ("sgd8bit_m0.9", lambda p: bnb.optim.SGD8bit([p], lr=1e-2, momentum=0.9, min_8bit_size=4096),
     "sgd", {"lr": 1e-2, "momentum": 0.9},
     [("momentum_buffer", "state1", "absmax1")]),
]


def run_case(case, make, name, config, buffers, out_dir):
    p = torch.nn.Parameter(torch.from_numpy(uniform_vec(11, N)))
    opt = make(p)
    tensors = {}
    codes = {b[0]: [] for b in buffers}
    absmax = {b[0]: [] for b in buffers}
    params = []
    for step in range(1, STEPS + 1):
        p.grad = torch.from_numpy(grad(step))
        opt.step()
        st = opt.state[p]
        for (dname, skey, akey) in buffers:
            assert st[skey].dtype == torch.uint8, (case, skey, st[skey].dtype)
            codes[dname].append(st[skey].numpy().copy().reshape(-1))
            absmax[dname].append(st[akey].numpy().copy().reshape(-1))
        if step % PARAM_EVERY == 0:
            params.append(p.detach().numpy().copy())
    st = opt.state[p]
    maps = {"qmap1": st["qmap1"].numpy().copy()}
    if "qmap2" in st and st["qmap2"] is not None:
        maps["qmap2"] = st["qmap2"].numpy().copy()
    for (dname, _, _) in buffers:
        tensors[f"{dname}.codes"] = np.stack(codes[dname]).astype(np.uint8)
        tensors[f"{dname}.absmax"] = np.stack(absmax[dname]).astype(np.float32)
    tensors["param"] = np.stack(params).astype(np.float32)
    for k, v in maps.items():
        tensors[k] = v.astype(np.float32)
    meta = {
        "case": case,
        "optimizer": name,
        "config": json.dumps(config),
        "buffers": json.dumps([b[0] for b in buffers]),
        "n": str(N),
        "steps": str(STEPS),
        "param_every": str(PARAM_EVERY),
        "bitsandbytes": bnb.__version__,
        "torch": torch.__version__.split("+")[0],
    }
    save_file(tensors, os.path.join(out_dir, f"{case}.safetensors"), metadata=meta)
    return maps


def lut_quantize(x, qmap):
    """downhill's (and bitsandbytes' CPU) rounding: 65,536 levels, then a table."""
    qmap = qmap.astype(np.float32)
    mid = ((qmap[:-1] + qmap[1:]) * np.float32(0.5)).astype(np.float32)
    levels = (np.float32(-1.0) + (np.float32(2.0) * np.arange(65536, dtype=np.float32))
              / np.float32(65535)).astype(np.float32)
    lut = np.searchsorted(mid, levels, side="left").astype(np.uint8)
    out = np.empty(x.shape, np.uint8)
    for b in range(0, x.size, 256):
        blk = x[b:b + 256]
        a = np.float32(np.max(np.abs(blk)))
        if a == 0:
            out[b:b + 256] = 0
            continue
        inv = np.float32(1.0) / a
        y = np.clip((blk * inv).astype(np.float32), -1, 1)
        idx = ((y + np.float32(1)) * np.float32(0.5) * np.float32(65535) + np.float32(0.5))
        out[b:b + 256] = lut[idx.astype(np.float32).astype(np.int64)]
    return out


def nearest_quantize(x, qmap):
    out = np.empty(x.shape, np.uint8)
    for b in range(0, x.size, 256):
        blk = x[b:b + 256]
        a = np.float32(np.max(np.abs(blk)))
        y = blk / a if a > 0 else blk
        out[b:b + 256] = np.argmin(np.abs(y[:, None] - qmap[None, :]), axis=1)
    return out


def measure_rounding(qmap1, qmap2):
    rows = []
    for label, qmap, signed in [("signed", qmap1, True), ("unsigned", qmap2, False)]:
        for dist in ["normal", "normal^2 (second moment)", "uniform"]:
            rs = np.random.RandomState(0)
            if dist == "normal":
                x = rs.randn(1 << 16).astype(np.float32) * np.float32(0.01)
            elif dist.startswith("normal^2"):
                x = (rs.randn(1 << 16).astype(np.float32) * np.float32(0.01)) ** 2
            else:
                x = rs.rand(1 << 16).astype(np.float32)
            if not signed:
                x = np.abs(x)
            codes, _ = F.quantize_blockwise(torch.from_numpy(x), code=torch.from_numpy(qmap),
                                            blocksize=256)
            codes = codes.numpy().reshape(-1)
            lut = (lut_quantize(x, qmap) == codes).mean()
            near = (nearest_quantize(x, qmap) == codes).mean()
            rows.append((label, dist, lut, near))
    return rows


def write_maps_rs(qmap1, qmap2):
    path = os.path.join(ROOT, "crates/downhill/src/storage/maps.rs")
    text = open(path).read()
    # The 8-bit maps must be those the file already holds (4-bit maps come from torchao's
    # formulas and are checked by the Rust tests against their closed forms).
    def bits(a):
        return [int(np.float32(v).view(np.uint32)) for v in a]
    for label, m in [("SIGNED8", qmap1), ("UNSIGNED8", qmap2)]:
        want = bits(np.sort(m))
        start = text.index(f"pub(crate) const {label}: [u32; 256] = [")
        end = text.index("];", start)
        have = [int(x, 16) for x in text[start:end].split("[", 2)[2].replace("\n", " ").split(",")
                if x.strip()]
        if have != want:
            body = "".join(
                ("\n    " if i % 8 == 0 else " ") + "0x%08x," % w for i, w in enumerate(want))
            text = text[:start] + f"pub(crate) const {label}: [u32; 256] = [" + body + "\n" + \
                text[end:]
            print(f"maps.rs: {label} rewritten")
        else:
            print(f"maps.rs: {label} equals bitsandbytes' map")
    open(path, "w").write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "testdata/golden/lowbit"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    maps = None
    for case in CASES:
        m = run_case(*case, args.out)
        if "qmap2" in m:
            maps = m
        print("wrote", case[0])
    rows = measure_rounding(maps["qmap1"], maps["qmap2"])
    write_maps_rs(maps["qmap1"], maps["qmap2"])
    lines = [
        "# 8-bit state goldens (bitsandbytes %s, torch %s, CPU backend)" % (
            bnb.__version__, torch.__version__.split("+")[0]),
        "",
        "Made by `scripts/gen_golden_lowbit.py` (read its docstring for the inputs and the",
        "protocol `crates/downhill/tests/golden_lowbit.rs` follows). One safetensors file per",
        "case: `{buffer}.codes` (U8, [50, 4160]) and `{buffer}.absmax` (F32, [50, 17]) after every",
        "step, `param` (F32, [5, 4160]) after steps 10, 20, .., 50, bitsandbytes' `qmap1`/`qmap2`;",
        "the metadata holds downhill's optimizer name and config.",
        "",
        "Cases: " + ", ".join(c[0] for c in CASES) + ".",
        "",
        "How bitsandbytes' CPU quantizer rounds, measured on 65,536 values per row (fraction of",
        "codes equal to bitsandbytes'):",
        "",
        "| map | values | level table (downhill) | nearest code |",
        "|---|---|---|---|",
    ]
    for label, dist, lut, near in rows:
        lines.append("| %s | %s | %.5f | %.5f |" % (label, dist, lut, near))
        print(label, dist, "lut", lut, "nearest", near)
    open(os.path.join(args.out, "README.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
