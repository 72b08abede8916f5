#!/usr/bin/env python3
"""Time the peers' optimizer steps on the shapes `downhill bench` uses; one JSON line each.

For every optimizer and shape given, this times

* PyTorch ``torch.optim.X`` three ways: ``foreach=False`` (the single-tensor loop, PyTorch's CPU
  default), ``foreach=True`` (multi-tensor) and ``fused=True`` where PyTorch has a fused kernel
  (Adam, AdamW, SGD, Adagrad), with ``torch.set_num_threads(K)``;
* optax: ``jax.jit`` of ``update`` + ``apply_updates`` with the parameters and the optimizer state
  donated, synchronised with ``block_until_ready`` after every step.

Gradients are fixed tensors set once (the step is timed, not the backward pass), like
``downhill bench``. Each variant runs ``--warmup`` untimed steps, then at least ``--min-steps``
timed steps and at least ``--min-time-ms`` of them, and reports the median step time.

Threads. ``--threads K`` is applied before torch or jax is imported:

* the process's CPU affinity is restricted to the first K CPUs it may run on
  (``os.sched_setaffinity``, the same as ``taskset -c 0..K-1``). This is what bounds jax: XLA's
  CPU client sizes its intra-op thread pool from the schedulable CPUs, and whatever threads it
  starts cannot use more than K cores. ``XLA_FLAGS`` is left as the caller set it: the often
  quoted ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` only affects
  Eigen's matmul/convolution pool (an optimizer step has none), and a different ``XLA_FLAGS``
  would change the key of jax's compilation cache between the 1- and 2-thread runs;
* ``OMP_NUM_THREADS=K`` and ``torch.set_num_threads(K)`` for PyTorch.

A single process can therefore only measure one thread count: run it once per K.

Compilation. optax's jitted step over 1,000 tensors takes XLA from seconds (Adam) to a minute
(LAMB, with per-tensor norms) to compile on 2 cores. ``--jax-cache DIR`` turns on jax's persistent
compilation cache there, and ``--compile-only`` fills it from abstract shapes (no arrays, nothing
timed), so the timed run does not spend its time compiling. Compilation never enters the timings
either way: it happens in the first warm-up step.

Hyperparameters. ``--configs FILE`` is a JSON object ``{"adam": {"lr": 0.001, ...}, ...}`` holding
each optimizer's ``config`` as ``downhill bench --json`` prints it; ``scripts/bench_all.sh`` writes
it from our own runs so that every library runs the same hyperparameters. Without it, the
defaults below (PyTorch's, and SGD with momentum 0.9) are used. Keys a peer does not have are
dropped (and listed in the output's ``dropped`` field when their value is not the default).

Output: one JSON object per line with ``library`` (torch/optax), ``variant``
(single-tensor/foreach/fused/jit), ``optimizer``, ``params``, ``tensors``, ``threads``, ``steps``,
``median_step_seconds``, ``mparams_per_s`` and ``versions``; or ``error`` when a variant failed.

Example::

    python scripts/bench_peers.py --optimizers adam,rmsprop --shape 1e7x1 --shape 1e6x1000 \\
        --threads 2 --libraries torch,optax
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import sys
import time
import traceback

OPTIMIZERS = [
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta", "lamb",
    "lars", "lion", "adafactor", "muon",
]
# The optimizers that need the matrix: timed on --matrix RxC tensors (not 1-D splits).
MATRIX_OPTIMIZERS = {"adafactor", "muon"}

# Used only without --configs: PyTorch's defaults (SGD with momentum 0.9), the papers' for the
# optimizers PyTorch lacks.
DEFAULT_CONFIGS = {
    "sgd": {"lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                "eps": 1e-10},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                "centered": False},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2},
    "adamax": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
    "nadam": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
              "momentum_decay": 4e-3},
    "radam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
    "lamb": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0},
    "lars": {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0, "trust_coefficient": 1e-3,
             "eps": 0.0},
    "lion": {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0},
    "adafactor": {"lr": 1e-2, "beta2_decay": -0.8, "eps": [None, 1e-3], "d": 1.0,
                  "weight_decay": 0.0},
    "muon": {"lr": 1e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True,
             "ns_coefficients": [3.4445, -4.775, 2.0315], "eps": 1e-7, "ns_steps": 5},
}

TORCH_CLASSES = {
    "sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
    "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "adadelta": "Adadelta",
    "adafactor": "Adafactor", "muon": "Muon",
}
TORCH_FUSED = {"sgd", "adagrad", "adam", "adamw"}


def parse_count(text: str) -> int:
    x = float(text.replace("_", ""))
    if x < 1 or x != int(x):
        raise argparse.ArgumentTypeError(f"expected a whole number such as 1e6, got {text!r}")
    return int(x)


def parse_shape(text: str) -> tuple[int, int]:
    """`1e7x1000` -> (10_000_000, 1000): parameters in all, split into that many tensors."""
    try:
        params, tensors = text.lower().split("x")
        shape = parse_count(params), parse_count(tensors)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected PARAMSxTENSORS such as 1e6x1000, got {text!r}")
    if shape[1] > shape[0]:
        raise argparse.ArgumentTypeError(f"more tensors than parameters in {text!r}")
    return shape


def parse_matrix(text: str) -> tuple[int, int]:
    """`1024x1024` -> (1024, 1024)."""
    try:
        r, c = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RxC such as 1024x1024, got {text!r}")
    return r, c


def split_sizes(params: int, tensors: int) -> list[int]:
    """As `downhill::bench`: equal sizes, the first `params % tensors` one larger."""
    return [params // tensors + (1 if i < params % tensors else 0) for i in range(tensors)]


def set_threads(k: int) -> list[int]:
    """Pin the process to K CPUs and size the thread pools; must run before torch/jax import."""
    cpus = sorted(os.sched_getaffinity(0))
    if k > len(cpus):
        print(f"warning: {k} threads asked, only {len(cpus)} CPUs available", file=sys.stderr)
    chosen = cpus[: max(1, k)]
    os.sched_setaffinity(0, chosen)
    os.environ["OMP_NUM_THREADS"] = str(k)
    os.environ["MKL_NUM_THREADS"] = str(k)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    return chosen


def time_steps(step, sync, warmup: int, min_steps: int, min_time: float) -> tuple[float, int]:
    """Median seconds per step after `warmup` untimed steps, as `downhill::bench` does."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < min_steps or time.perf_counter() - start < min_time:
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
            if len(times) >= 100_000:
                break
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(times), len(times)


# ---------------------------------------------------------------------------------------------
# PyTorch


def torch_kwargs(torch, name: str, config: dict) -> tuple[dict, dict]:
    """Our config -> the keyword arguments torch.optim.X accepts; also what was dropped."""
    cls = getattr(torch.optim, TORCH_CLASSES[name])
    accepted = inspect.signature(cls).parameters
    kwargs, dropped = {}, {}
    for key, value in config.items():
        if key in accepted and key not in ("foreach", "fused", "capturable", "differentiable"):
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif value not in (None, False, 0, 0.0, "pytorch") and not (
                key == "bias_correction" and value is True):
            dropped[key] = value  # a non-default setting PyTorch cannot express
    return kwargs, dropped


def bench_torch(torch, name, config, params, tensors, variants, opts, matrix=None):
    if name not in TORCH_CLASSES:
        return
    cls = getattr(torch.optim, TORCH_CLASSES[name])
    kwargs, dropped = torch_kwargs(torch, name, config)
    gen = torch.Generator().manual_seed(0)
    # Shapes: 1-D splits, or `tensors` matrices of `matrix` (params = tensors * R * C).
    sizes = [matrix] * tensors if matrix else [(n,) for n in split_sizes(params, tensors)]
    for variant in variants:
        if variant == "fused" and name not in TORCH_FUSED:
            continue
        extra = {"single-tensor": {"foreach": False}, "foreach": {"foreach": True},
                 "fused": {"fused": True}}[variant]
        if variant == "single-tensor" and name in TORCH_FUSED:
            extra["fused"] = False
        if name == "muon":  # one path, no foreach argument
            if variant != "single-tensor":
                continue
            extra = {}
        row = base_row("torch", variant, name, params, tensors, opts.threads)
        if matrix:
            row["matrix"] = list(matrix)
        try:
            ps = []
            dtype = {"f32": torch.float32, "bf16": torch.bfloat16,
                     "f16": torch.float16}[opts.param_dtype]
            for n in sizes:
                p = (torch.randn(n, generator=gen) * 0.05).to(dtype).requires_grad_(True)
                p.grad = (torch.randn(n, generator=gen) * 1e-3).to(dtype)
                ps.append(p)
            if opts.param_dtype != "f32":
                # PyTorch updates bf16/f16 parameters in their own dtype (no master weights).
                row["param_dtype"] = opts.param_dtype
                row["variant"] = f"{variant}-{opts.param_dtype}"
            opt = cls(ps, **kwargs, **extra)
            median, steps = time_steps(opt.step, lambda: None, opts.warmup, opts.min_steps,
                                       opts.min_time_ms / 1e3)
            row.update(timing(median, steps, params))
            if dropped:
                row["dropped"] = dropped
            del opt, ps
        except Exception as e:  # report and go on: one unsupported variant must not stop a run
            row["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        gc.collect()
        emit(row)


# ---------------------------------------------------------------------------------------------
# optax


def optax_transform(optax, name: str, c: dict):
    b1, b2 = c.get("betas", (0.9, 0.999))
    lr = c["lr"]
    if name == "sgd":
        m = c.get("momentum", 0.0)
        return optax.sgd(lr, momentum=m if m else None, nesterov=bool(c.get("nesterov", False)))
    if name == "adagrad":
        return optax.adagrad(lr, initial_accumulator_value=c.get("initial_accumulator_value", 0.0),
                             eps=c.get("eps", 1e-10))
    if name == "rmsprop":
        m = c.get("momentum", 0.0)
        return optax.rmsprop(lr, decay=c.get("alpha", 0.99), eps=c.get("eps", 1e-8),
                             centered=bool(c.get("centered", False)), momentum=m if m else None)
    if name == "adam":
        return optax.adam(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-8))
    if name == "adamw":
        return optax.adamw(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-8),
                           weight_decay=c.get("weight_decay", 1e-2))
    if name == "adamax":
        return optax.adamax(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-8))
    if name == "nadam":
        return optax.nadam(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-8))
    if name == "radam":
        return optax.radam(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-8))
    if name == "adadelta":
        return optax.adadelta(lr, rho=c.get("rho", 0.9), eps=c.get("eps", 1e-6),
                              weight_decay=c.get("weight_decay", 0.0))
    if name == "lamb":
        return optax.lamb(lr, b1=b1, b2=b2, eps=c.get("eps", 1e-6),
                          eps_root=c.get("eps_root", 0.0), weight_decay=c.get("weight_decay", 0.0))
    if name == "lars":
        return optax.lars(lr, weight_decay=c.get("weight_decay", 0.0),
                          trust_coefficient=c.get("trust_coefficient", 1e-3),
                          eps=c.get("eps", 0.0), momentum=c.get("momentum", 0.9),
                          nesterov=bool(c.get("nesterov", False)))
    if name == "lion":
        return optax.lion(lr, b1=b1, b2=b2, weight_decay=c.get("weight_decay", 0.0))
    return None


def optax_step(jax, optax, tx):
    """The jitted step: update + apply_updates, parameters and state donated."""

    def update(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(update, donate_argnums=(0, 1))


def compile_optax(jax, optax, name, config, params, tensors) -> None:
    """Compile the step from abstract shapes only, to fill the persistent compilation cache."""
    import jax.numpy as jnp

    tx = optax_transform(optax, name, config)
    if tx is None:
        return
    t = time.perf_counter()
    ps = [jax.ShapeDtypeStruct((n,), jnp.float32) for n in split_sizes(params, tensors)]
    state = jax.eval_shape(tx.init, ps)
    optax_step(jax, optax, tx).lower(ps, state, ps).compile()
    row = base_row("optax", "compile-only", name, params, tensors, None)
    row["compile_seconds"] = time.perf_counter() - t
    emit(row)


def bench_optax(jax, optax, name, config, params, tensors, opts):
    import jax.numpy as jnp

    tx = optax_transform(optax, name, config)
    if tx is None:
        return
    row = base_row("optax", "jit", name, params, tensors, opts.threads)
    try:
        key = jax.random.PRNGKey(0)
        sizes = split_sizes(params, tensors)
        keys = jax.random.split(key, 2 * len(sizes))
        ps = [jax.random.normal(keys[2 * i], (n,), jnp.float32) * 0.05 for i, n in enumerate(sizes)]
        gs = [jax.random.normal(keys[2 * i + 1], (n,), jnp.float32) * 1e-3
              for i, n in enumerate(sizes)]
        state = tx.init(ps)
        jitted = optax_step(jax, optax, tx)
        box = {"p": ps, "s": state}
        del ps, state

        def step():
            box["p"], box["s"] = jitted(box["p"], box["s"], gs)

        def sync():
            jax.block_until_ready(box["p"])
            jax.block_until_ready(box["s"])

        t = time.perf_counter()
        step()  # compiles (or loads from the cache): the first warm-up step, reported apart
        sync()
        row["first_step_seconds"] = time.perf_counter() - t
        median, steps = time_steps(step, sync, max(opts.warmup - 1, 0), opts.min_steps,
                                   opts.min_time_ms / 1e3)
        row.update(timing(median, steps, params))
        del box, gs, jitted
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)
    gc.collect()
    emit(row)


# ---------------------------------------------------------------------------------------------

VERSIONS: dict = {}


def base_row(library, variant, name, params, tensors, threads) -> dict:
    return {"library": library, "variant": variant, "optimizer": name, "params": params,
            "tensors": tensors, "threads": threads}


def timing(median: float, steps: int, params: int) -> dict:
    return {"steps": steps, "median_step_seconds": median, "mparams_per_s": params / median / 1e6}


def emit(row: dict) -> None:
    row["versions"] = VERSIONS
    print(json.dumps(row), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                    help="comma-separated names (default: all twelve)")
    ap.add_argument("--shape", action="append", type=parse_shape, default=[],
                    help="PARAMSxTENSORS, e.g. 1e7x1 or 1e6x1000; repeatable")
    ap.add_argument("--matrix", type=parse_matrix,
                    help="RxC: time the optimizers that need the matrix (adafactor, muon) on "
                    "--tensors matrices of this shape instead of --shape")
    ap.add_argument("--tensors", type=int, default=1, help="number of --matrix matrices")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--libraries", default="torch,optax", help="torch, optax or both")
    ap.add_argument("--torch-variants", default="single-tensor,foreach,fused")
    ap.add_argument("--configs", help="JSON file {optimizer: config} from downhill bench --json")
    ap.add_argument("--param-dtype", default="f32", choices=["f32", "bf16", "f16"],
                    help="torch only: parameters and gradients in this dtype (fused AdamW "
                         "runs on bf16 parameters directly)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-steps", type=int, default=10)
    ap.add_argument("--min-time-ms", type=float, default=500)
    ap.add_argument("--jax-cache", help="directory of jax's persistent compilation cache")
    ap.add_argument("--compile-only", action="store_true",
                    help="only compile the optax steps (fills --jax-cache); time nothing")
    opts = ap.parse_args()
    if not opts.shape:
        opts.shape = [(1_000_000, 1)]
    names = [n.strip() for n in opts.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        ap.error(f"unknown optimizer(s) {unknown}; known: {OPTIMIZERS}")
    libraries = {x.strip() for x in opts.libraries.split(",") if x.strip()}
    variants = [v.strip() for v in opts.torch_variants.split(",") if v.strip()]
    configs = dict(DEFAULT_CONFIGS)
    if opts.configs:
        with open(opts.configs) as f:
            configs.update(json.load(f))

    cpus = set_threads(opts.threads)
    VERSIONS["cpus"] = cpus
    for var in ("XLA_FLAGS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS"):
        VERSIONS[var.lower()] = os.environ.get(var, "")
    torch = jax = optax = None
    if "torch" in libraries:
        import torch

        torch.set_num_threads(opts.threads)
        VERSIONS["torch"] = torch.__version__
        VERSIONS["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if "optax" in libraries:
        import jax
        import optax

        VERSIONS["jax"] = jax.__version__
        VERSIONS["optax"] = optax.__version__
        VERSIONS["jax_devices"] = [str(d) for d in jax.devices()]
        if opts.jax_cache:
            jax.config.update("jax_compilation_cache_dir", opts.jax_cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if opts.compile_only:
        if optax is None:
            ap.error("--compile-only needs optax in --libraries")
        for params, tensors in opts.shape:
            for name in names:
                compile_optax(jax, optax, name, configs[name], params, tensors)
        return 0

    if opts.matrix:
        r, c = opts.matrix
        for name in names:
            if torch is not None:
                bench_torch(torch, name, configs[name], opts.tensors * r * c, opts.tensors,
                            variants, opts, matrix=(r, c))
        return 0
    for params, tensors in opts.shape:
        for name in names:
            if name in MATRIX_OPTIMIZERS:
                continue
            if torch is not None:
                bench_torch(torch, name, configs[name], params, tensors, variants, opts)
            if optax is not None:
                bench_optax(jax, optax, name, configs[name], params, tensors, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
