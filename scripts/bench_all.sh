#!/usr/bin/env bash
# Benchmarks every downhill optimizer against PyTorch and optax, side by side, in one go, on this
# machine, and writes BENCHMARKS.md (tables, ratios, and issue 3's targets met or missed).
#
#   PYTHON=/path/to/venv/bin/python scripts/bench_all.sh [options]
#
# Options:
#   --quick             tiny sizes and short timings, to test the scripts (writes
#                       target/bench/BENCHMARKS-quick.md, never BENCHMARKS.md)
#   --min-time-ms M     timed work per measurement, each of ours and the probe (default 200)
#   --threads "1 2"     thread counts (default "1 2")
#   --optimizers "a b"  subset of optimizers (default all twelve)
#   --markdown FILE     where to write the report (default BENCHMARKS.md)
#   --busy-note TEXT    say in the report that the machine was not quiet, and why
#   --prewarm-only      only build, and fill jax's compilation cache for the 1,000-tensor shapes
#                       (slow XLA compiles, nothing is timed), then stop
#
# What runs, for each thread count K and each shape (parameters x tensors):
#   ours:  target/release/downhill bench --json, one process per optimizer;
#   peers: scripts/bench_peers.py, one process per shape: torch.optim single-tensor, foreach and
#          fused (where PyTorch has it) and optax jit, with the same hyperparameters as ours
#          (taken from our --json output), pinned to K CPUs.
# Then Adafactor and Muon on matrices (ten 1024x1024, one 4096x1024) against torch.optim.
# Shapes: a 1,000-parameter tensor (the per-step overhead target), 1e4, 1e6, 1e7 and 5e7
# parameters as one tensor, 1e6 and 1e7 parameters as 1,000 tensors. SGD runs with momentum 0.9.
# All JSON lines go to target/bench/results-DATE.jsonl (and target/bench/results.jsonl).
#
# Needs: cargo, python with the versions in scripts/requirements-bench.txt, taskset (util-linux).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COMMAND="$0 $*"

QUICK=0
MIN_TIME_MS=200
THREADS="1 2"
OPTIMIZERS="sgd adagrad rmsprop adam adamw adamax nadam radam adadelta lamb lars lion"
MARKDOWN=""
BUSY_NOTE="${BENCH_BUSY_NOTE:-}"
PREWARM_ONLY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --min-time-ms) MIN_TIME_MS="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --optimizers) OPTIMIZERS="$2"; shift ;;
        --markdown) MARKDOWN="$2"; shift ;;
        --busy-note) BUSY_NOTE="$2"; shift ;;
        --prewarm-only) PREWARM_ONLY=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

WARMUP=3
MIN_STEPS=10
SHAPES="1e3x1 1e4x1 1e6x1 1e7x1 5e7x1 1e6x1000 1e7x1000"
MANY_SHAPES="1e6x1000 1e7x1000"
if [[ $QUICK == 1 ]]; then
    MIN_TIME_MS=20
    MIN_STEPS=3
    WARMUP=1
    SHAPES="1e3x1 1e4x1 1e5x1 1e5x100"
    MANY_SHAPES="1e5x100"
    MARKDOWN="${MARKDOWN:-target/bench/BENCHMARKS-quick.md}"
fi
MARKDOWN="${MARKDOWN:-BENCHMARKS.md}"

OUT=target/bench
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$OUT/results-$STAMP.jsonl"
CONFIGS="$OUT/configs-$STAMP.json"
META="$OUT/meta-$STAMP.json"
JAX_CACHE="$OUT/jax-cache"
BIN=target/release/downhill
START=$(date +%s)

log() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*" >&2; }

# The first K CPUs this process may use, as taskset wants them ("0" or "0,1").
cpus_for() {
    "$PYTHON" -c "import os,sys; print(','.join(map(str, sorted(os.sched_getaffinity(0))[:int(sys.argv[1])])))" "$1"
}
pinned() { # pinned K cmd...: run cmd on the first K CPUs (as bench_peers.py pins itself)
    local k=$1; shift
    if command -v taskset >/dev/null; then taskset -c "$(cpus_for "$k")" "$@"; else "$@"; fi
}

hyper_flags() { # the hyperparameters every library runs: our defaults, SGD with momentum 0.9
    case "$1" in
        sgd) echo "--momentum 0.9" ;;
        *) echo "" ;;
    esac
}

split_shape() { SHAPE_PARAMS=${1%x*}; SHAPE_TENSORS=${1#*x}; }

# Records, before each phase (while nothing of ours runs), how busy the CPUs are with other
# work: the busy fraction of all CPUs over half a second from /proc/stat, and the load average.
# bench_table.py lists the phases that did not start on an idle machine.
phase() { # phase THREADS SHAPE PART
    "$PYTHON" - "$@" >> "$RESULTS" <<'EOF'
import json, sys, time
def snap():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait
t0, i0 = snap(); time.sleep(0.5); t1, i1 = snap()
busy = 1 - (i1 - i0) / max(t1 - t0, 1)
with open("/proc/loadavg") as f:
    load1 = float(f.read().split()[0])
print(json.dumps({"kind": "phase", "threads": int(sys.argv[1]), "shape": sys.argv[2],
                  "part": sys.argv[3], "other_cpu_busy": round(busy, 3), "load1": load1,
                  "time": time.strftime("%H:%M:%S")}))
EOF
}

log "building: cargo build --release -p downhill-lab"
cargo build --release -p downhill-lab >&2

# Our configs (hyperparameters) as our CLI resolves them, for the peers: {name: config}.
log "resolving hyperparameters"
{
    echo "{"
    first=1
    for opt in $OPTIMIZERS; do
        # shellcheck disable=SC2046
        line=$("$BIN" bench --optimizer "$opt" $(hyper_flags "$opt") --params 1000 --threads 1 \
            --warmup 0 --min-steps 1 --min-time-ms 0 --json)
        cfg=$("$PYTHON" -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["config"]))' "$line")
        [[ $first == 1 ]] || echo ","
        first=0
        printf '"%s": %s' "$opt" "$cfg"
    done
    echo "}"
} > "$CONFIGS"

if [[ $PREWARM_ONLY == 1 ]]; then
    # shellcheck disable=SC2086
    shape_args=$(for s in $MANY_SHAPES; do printf -- '--shape %s ' "$s"; done)
    log "filling the jax compilation cache ($JAX_CACHE) for $MANY_SHAPES"
    # shellcheck disable=SC2086
    nice -n 19 "$PYTHON" scripts/bench_peers.py --libraries optax --compile-only \
        --optimizers "${OPTIMIZERS// /,}" $shape_args --configs "$CONFIGS" \
        --jax-cache "$JAX_CACHE" --threads 2
    log "done"
    exit 0
fi

# Facts about the run, for the report.
versions=$("$PYTHON" - <<'EOF'
import importlib.metadata as m
out = []
for p in ["torch", "jax", "jaxlib", "optax", "numpy"]:
    try:
        out.append(f"{p} {m.version(p)}")
    except m.PackageNotFoundError:
        out.append(f"{p} missing")
print(", ".join(out))
EOF
)
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cpu_count=$(nproc)
cpu_flags=$(grep -m1 -o -w 'avx512f\|avx2' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' || true)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
top_before=$(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | head -5 | awk '{printf "%s %s%%; ", $2, $1}')
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo true || echo false)
rustc_version=$(rustc -V)

log "results: $RESULTS"
: > "$RESULTS"
for k in $THREADS; do
    for shape in $SHAPES; do
        split_shape "$shape"
        log "$k thread(s), $shape: ours"
        phase "$k" "$shape" ours
        for opt in $OPTIMIZERS; do
            # shellcheck disable=SC2046
            if ! pinned "$k" "$BIN" bench --optimizer "$opt" $(hyper_flags "$opt") \
                --params "$SHAPE_PARAMS" --tensors "$SHAPE_TENSORS" --threads "$k" \
                --warmup "$WARMUP" --min-steps "$MIN_STEPS" --min-time-ms "$MIN_TIME_MS" \
                --json >> "$RESULTS"; then
                printf '{"library":"downhill","variant":"fused","optimizer":"%s","params":%s,"tensors":%s,"threads":%s,"error":"downhill bench failed"}\n' \
                    "$opt" "$("$PYTHON" -c "print(int(float('$SHAPE_PARAMS')))")" "$SHAPE_TENSORS" "$k" >> "$RESULTS"
            fi
        done
        log "$k thread(s), $shape: torch and optax"
        phase "$k" "$shape" peers
        "$PYTHON" scripts/bench_peers.py --optimizers "${OPTIMIZERS// /,}" --shape "$shape" \
            --threads "$k" --configs "$CONFIGS" --jax-cache "$JAX_CACHE" --warmup "$WARMUP" \
            --min-steps "$MIN_STEPS" --min-time-ms "$MIN_TIME_MS" >> "$RESULTS" \
            || log "bench_peers.py failed for $shape at $k thread(s)"
    done
done
# Low-precision storage (issue 11): AdamW at 1e7 x 1 on the largest thread count, ours with
# int8 state, with bf16 parameters + f32 master weights and both, against PyTorch's fused AdamW
# on bf16 parameters.
k_last=${THREADS##* }
log "$k_last thread(s), 1e7x1: storage (int8 state, bf16 parameters)"
phase "$k_last" 1e7x1 storage
for storage in "--state-dtype int8" "--param-dtype bf16" "--param-dtype bf16 --state-dtype int8"; do
    # shellcheck disable=SC2086
    pinned "$k_last" "$BIN" bench --optimizer adamw $(hyper_flags adamw) --params 1e7 \
        --tensors 1 --threads "$k_last" --warmup "$WARMUP" --min-steps "$MIN_STEPS" \
        --min-time-ms "$MIN_TIME_MS" $storage --json >> "$RESULTS" \
        || log "downhill bench $storage failed"
done
"$PYTHON" scripts/bench_peers.py --optimizers adamw --shape 1e7x1 --threads "$k_last" \
    --libraries torch --torch-variants fused --param-dtype bf16 --configs "$CONFIGS" \
    --warmup "$WARMUP" --min-steps "$MIN_STEPS" --min-time-ms "$MIN_TIME_MS" >> "$RESULTS" \
    || log "bench_peers.py --param-dtype bf16 failed"

# The optimizers that need the matrix (issue 10), on matrices rather than 1-D splits: ten
# 1024x1024 matrices and one 4096x1024, each against torch.optim single-tensor and foreach
# (Muon has one path; PyTorch runs its Newton-Schulz iteration in bf16, ours in f32 by default,
# so ours also runs with --ns-dtype bfloat16).
MATRIX_SHAPES="1024x1024:10 4096x1024:1"
MATRIX_OPTIMIZERS="adafactor muon"
if [[ $QUICK == 1 ]]; then MATRIX_SHAPES="128x128:4 256x128:1"; fi
for k in $THREADS; do
    for ms in $MATRIX_SHAPES; do
        mshape=${ms%:*}; mcount=${ms#*:}
        log "$k thread(s), $mcount x $mshape: ours"
        phase "$k" "${mshape}x$mcount" ours
        for opt in $MATRIX_OPTIMIZERS; do
            variants=("")
            [[ $opt == muon ]] && variants=("" "--ns-dtype bfloat16")
            for extra in "${variants[@]}"; do
                # shellcheck disable=SC2086
                pinned "$k" "$BIN" bench --optimizer "$opt" $extra --matrix "$mshape" \
                    --tensors "$mcount" --threads "$k" --warmup "$WARMUP" \
                    --min-steps "$MIN_STEPS" --min-time-ms "$MIN_TIME_MS" --json >> "$RESULTS" \
                    || log "downhill bench $opt $extra failed for $mcount x $mshape"
            done
        done
        log "$k thread(s), $mcount x $mshape: torch"
        phase "$k" "${mshape}x$mcount" peers
        "$PYTHON" scripts/bench_peers.py --optimizers "${MATRIX_OPTIMIZERS// /,}" \
            --matrix "$mshape" --tensors "$mcount" --threads "$k" --libraries torch \
            --torch-variants single-tensor,foreach --warmup "$WARMUP" --min-steps "$MIN_STEPS" \
            --min-time-ms "$MIN_TIME_MS" >> "$RESULTS" \
            || log "bench_peers.py failed for $mcount x $mshape at $k thread(s)"
    done
done
cp "$RESULTS" "$OUT/results.jsonl"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - START ))
M_COMMAND="PYTHON=$PYTHON $COMMAND" M_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
M_CPU="$cpu_model, $cpu_count CPUs (${cpu_flags% })" M_COMMIT="$commit" M_DIRTY="$dirty" \
M_RUSTC="$rustc_version" M_PEERS="$versions" \
M_TIMING="median step after $WARMUP warm-up step(s), at least $MIN_STEPS timed steps and $MIN_TIME_MS ms of them per measurement (ours: each of the optimizer and its probe, taken in alternating blocks of at least 25 ms)" \
M_ENV="OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset (libgomp default)}, XLA_FLAGS=${XLA_FLAGS:-unset}, DOWNHILL_ISA=${DOWNHILL_ISA:-unset}" \
M_LOAD_BEFORE="$load_before" M_LOAD_AFTER="$load_after" M_TOP_BEFORE="$top_before" \
M_ELAPSED="$((elapsed / 60)) min $((elapsed % 60)) s" M_QUICK="$QUICK" M_BUSY="$BUSY_NOTE" \
M_RESULTS="$RESULTS" "$PYTHON" - "$META" <<'EOF'
import json, os, sys
e = os.environ
json.dump({
    "command": e["M_COMMAND"], "date": e["M_DATE"], "cpu": e["M_CPU"], "commit": e["M_COMMIT"],
    "dirty": e["M_DIRTY"] == "true", "rustc": e["M_RUSTC"], "peers": e["M_PEERS"],
    "timing": e["M_TIMING"], "env": e["M_ENV"], "load_before": e["M_LOAD_BEFORE"], "load_after": e["M_LOAD_AFTER"],
    "top_before": e["M_TOP_BEFORE"].strip().rstrip(";"), "elapsed": e["M_ELAPSED"],
    "quick": e["M_QUICK"] == "1", "busy_note": e["M_BUSY"].strip(), "results": e["M_RESULTS"],
}, open(sys.argv[1], "w"), indent=1)
EOF
log "tables (and $MARKDOWN)"
"$PYTHON" scripts/bench_table.py "$RESULTS" --meta "$META" --markdown "$MARKDOWN"
log "done in $((elapsed / 60)) min $((elapsed % 60)) s"
