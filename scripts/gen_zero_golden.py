#!/usr/bin/env python3
"""Golden trajectories of PyTorch's ZeroRedundancyOptimizer for downhill's by-parameter sharding.

Two CPU processes over gloo (torch.distributed), each holding the same parameters and its own
gradients. Every step, each process sets its gradients, all-reduces them (SUM) over gloo and
halves them (the mean of two ranks, as DDP averages), then steps a
torch.distributed.optim.ZeroRedundancyOptimizer wrapping torch.optim.<Class>(foreach=False):
each rank steps the parameters it owns and broadcasts them.

Written to testdata/zero/zero_golden.json, per case:
  * "partition": the parameter names each rank owns (ZeroRedundancyOptimizer's
    _partition_parameters: per group, largest first, to the least-loaded rank);
  * "initial", "grads" (per step, per rank, per tensor), "params" (after every step; both ranks
    are checked to agree, and to equal the unsharded torch optimizer stepped on the same mean
    gradients, bit for bit);
  * "state": the consolidated optimizer state after the last step
    (consolidate_state_dict(to=0)), by parameter name and state key.

Checked by crates/downhill/tests/zero_golden.rs against downhill::dist::Sharded with
Partition::ByParameter on the thread backend (2 ranks).

Usage (versions pinned in scripts/requirements-golden.txt; torch 2.15.0):
    /work/venv/bin/python scripts/gen_zero_golden.py          # writes testdata/zero/zero_golden.json
    /work/venv/bin/python scripts/gen_zero_golden.py --out F  # somewhere else (to diff)

Deterministic: two runs give byte-identical files.
"""

import argparse
import json
import os
import platform
import socket
from collections import OrderedDict

# As scripts/gen_golden.py: the exact IEEE sqrt path of MKL, whatever the CPU.
os.environ["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402

MASK64 = (1 << 64) - 1
SEED = 12
STEPS = 6
WORLD = 2
# (name, shape, gradient scale). Two tensors of 256 elements (a tie in the partition), sizes
# on both sides of a rank's share.
TENSORS = [
    ("w0", [37], 1.0),
    ("w1", [32, 8], 2.0 ** -10),
    ("w2", [150], 1.0),
    ("w3", [16], 2.0 ** 6),
    ("w4", [8, 32], 1.0),
    ("w5", [9], 1.0),
    ("w6", [100], 0.5),
]
NAMES = [t[0] for t in TENSORS]


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        """Uniform in [-1, 1): top 24 bits, exact in f32 (never -0.0)."""
        z = self.next_u64()
        return np.float32((z >> 40) - 2**23) * np.float32(2.0**-23)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def make_inputs():
    rng = SplitMix64(SEED)
    initial = OrderedDict()
    for name, shape, _ in TENSORS:
        initial[name] = np.array([rng.uniform() for _ in range(numel(shape))], dtype=np.float32)
    grads = []  # grads[step][rank][name]
    for _ in range(STEPS):
        per_rank = []
        for _ in range(WORLD):
            g = OrderedDict()
            for name, shape, scale in TENSORS:
                g[name] = np.array(
                    [rng.uniform() * np.float32(scale) for _ in range(numel(shape))],
                    dtype=np.float32,
                )
            per_rank.append(g)
        grads.append(per_rank)
    return initial, grads


# Each case: the torch class, its param groups (names and torch keyword arguments) and the same
# groups as downhill configs ({"optimizer": ..., "config": ...}).
CASES = [
    (
        "adam",
        torch.optim.Adam,
        [(NAMES, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0))],
        [{"optimizer": "adam", "config": {"lr": 0.01}}],
    ),
    (
        "adamw_two_groups",
        torch.optim.AdamW,
        [
            (["w0", "w1", "w2", "w3"], dict(lr=0.01, weight_decay=0.01)),
            (["w4", "w5", "w6"], dict(lr=0.003, weight_decay=0.0)),
        ],
        [
            {"optimizer": "adamw", "config": {"lr": 0.01, "weight_decay": 0.01}},
            {"optimizer": "adamw", "config": {"lr": 0.003, "weight_decay": 0.0}},
        ],
    ),
    (
        "sgd_nesterov",
        torch.optim.SGD,
        [(NAMES, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3))],
        [{"optimizer": "sgd", "config": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}}],
    ),
    (
        "rmsprop_centered",
        torch.optim.RMSprop,
        [(NAMES, dict(lr=0.01, alpha=0.99, eps=1e-8, centered=True, momentum=0.5))],
        [{"optimizer": "rmsprop", "config": {"lr": 0.01, "centered": True, "momentum": 0.5}}],
    ),
]


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def bits(t):
    return t.detach().numpy().view(np.uint32).copy()


def worker(rank, port, queue):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    initial, grads = make_inputs()
    shapes = {name: shape for name, shape, _ in TENSORS}
    results = OrderedDict()
    for case, cls, torch_groups, _ in CASES:
        params = OrderedDict(
            (n, torch.nn.Parameter(torch.tensor(initial[n]).reshape(shapes[n]))) for n in NAMES
        )
        # The unsharded reference, stepped on the same mean gradients.
        plain = OrderedDict((n, torch.nn.Parameter(p.detach().clone())) for n, p in params.items())
        groups = [dict(params=[params[n] for n in names], **kw) for names, kw in torch_groups]
        opt = ZeroRedundancyOptimizer(groups, optimizer_class=cls, foreach=False)
        ref = cls([dict(params=[plain[n] for n in names], **kw) for names, kw in torch_groups], foreach=False)
        partition = [[] for _ in range(WORLD)]
        by_id = {id(p): n for n, p in params.items()}
        for r, rank_groups in enumerate(opt._partition_parameters()):
            for g in rank_groups:
                partition[r].extend(by_id[id(p)] for p in g["params"])
        trajectory = []
        for step in range(STEPS):
            for n, p in params.items():
                g = torch.tensor(grads[step][rank][n]).reshape(shapes[n])
                dist.all_reduce(g, op=dist.ReduceOp.SUM)
                g.mul_(0.5)
                want = (np.float32(0.0) + grads[step][0][n] + grads[step][1][n]) * np.float32(0.5)
                assert np.array_equal(g.numpy().reshape(-1).view(np.uint32), want.view(np.uint32)), n
                p.grad = g
                plain[n].grad = g.clone()
            opt.step()
            ref.step()
            for n in NAMES:
                assert np.array_equal(bits(params[n]), bits(plain[n])), f"{case}: ZeRO != unsharded ({n})"
            trajectory.append(OrderedDict((n, f32list(params[n].detach())) for n in NAMES))
        opt.consolidate_state_dict(to=0)
        state = OrderedDict()
        if rank == 0:
            sd = opt.state_dict()
            order = [n for names, _ in torch_groups for n in names]
            for idx, st in sorted(sd["state"].items()):
                state[order[idx]] = OrderedDict(
                    (k, f32list(v)) for k, v in sorted(st.items()) if k != "step" and torch.is_tensor(v) and v.numel() > 1
                )
        results[case] = (partition, trajectory, state)
    queue.put((rank, results))
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "zero", "zero_golden.json"))
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    got = dict(queue.get() for _ in range(WORLD))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    initial, grads = make_inputs()
    doc = OrderedDict()
    doc["generator"] = "scripts/gen_zero_golden.py"
    doc["reference"] = (
        "torch.distributed.optim.ZeroRedundancyOptimizer(optimizer_class=torch.optim.<Class>, "
        "foreach=False) over gloo, 2 CPU processes; gradients all-reduced (SUM) then halved"
    )
    doc["versions"] = OrderedDict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__)
    doc["world_size"] = WORLD
    doc["tensors"] = [OrderedDict(name=n, shape=s) for n, s, _ in TENSORS]
    doc["initial"] = OrderedDict((n, f32list(v)) for n, v in initial.items())
    doc["grads"] = [[OrderedDict((n, f32list(v)) for n, v in g.items()) for g in per_rank] for per_rank in grads]
    cases = []
    for case, _, torch_groups, ours in CASES:
        p0, t0, state = got[0][case]
        p1, t1, _ = got[1][case]
        assert p0 == p1 and t0 == t1, f"{case}: the ranks disagree"
        cases.append(OrderedDict(
            name=case,
            groups=[OrderedDict(params=names, config=cfg) for (names, _), cfg in zip(torch_groups, ours)],
            partition=p0,
            params=t0,
            state=state,
        ))
    doc["cases"] = cases
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {STEPS} steps, partition {cases[0]['partition']}")


if __name__ == "__main__":
    main()
