#!/usr/bin/env bash
# The storage part of scripts/bench_all.sh (issue 11), alone: AdamW at 1e7 parameters in one
# tensor on 2 threads with f32 state, int8 state, bf16 state, bf16 parameters + f32 master
# weights, and f16 parameters + master under a dynamic loss scale, in one run; prints each JSON
# line, the load, and a markdown table (BENCHMARKS.md's memory table is pasted from it).
#
#   scripts/bench_storage.sh [--min-time-ms M] [--threads K]
#
# int8 rows carry the 8-bit step's own access-shape probe (fraction_of_probe), the probe through
# the conversion and the f32-state probe of the same rounds (see crates/downhill/src/bench.rs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MIN_TIME_MS=500
THREADS=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --min-time-ms) MIN_TIME_MS="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
cargo build --release -p downhill-lab >&2
BIN=target/release/downhill
OUT=target/bench/storage-$(date -u +%Y%m%d-%H%M%S).jsonl
mkdir -p target/bench
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for storage in "" "--state-dtype int8" "--state-dtype bf16" "--param-dtype bf16" \
    "--param-dtype f16 --loss-scale dynamic"; do
    # shellcheck disable=SC2086
    "$BIN" bench --optimizer adamw --params 1e7 --tensors 1 --threads "$THREADS" --warmup 3 \
        --min-steps 10 --min-time-ms "$MIN_TIME_MS" $storage --json | tee -a "$OUT"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f32 = next(r for r in rows if r["variant"] == "fused")["median_step_seconds"]
print("| variant | ms/step | speed-up over f32 | GB/s | probe GB/s | of probe | notes |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    t = r["median_step_seconds"]
    notes = ""
    if "f32_probe_median_step_seconds" in r:
        notes = (f"own-shape probe {1e3 * r['probe_median_step_seconds']:.1f} ms, f32-state probe "
                 f"{1e3 * r['f32_probe_median_step_seconds']:.1f} ms (probe speed-up "
                 f"{r['probe_speedup_over_f32_probe']:.2f}x); of the conversion probe "
                 f"{100 * r['fraction_of_conversion_probe']:.0f}%")
    print(f"| {r['variant']} | {1e3 * t:.1f} | {f32 / t:.2f}x | {r['gb_per_s']:.1f} | "
          f"{r['probe_gb_per_s']:.1f} | {100 * r['fraction_of_probe']:.0f}% | {notes} |")
EOF
