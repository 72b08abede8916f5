#!/usr/bin/env bash
# Interop benchmarks, one run, written into BENCHMARKS.md between the markers
# <!-- interop:begin --> and <!-- interop:end --> (appended if absent):
#   - burn 0.22 (NdArray): burn's own Adam / AdamW against downhill's through downhill-burn,
#     in place and through the host round trip (crates/downhill-burn/examples/bench.rs);
#   - burn: where the host round trip's time goes, piece by piece
#     (crates/downhill-burn/examples/host_profile.rs);
#   - candle: the cost of the host round trip (the route of CUDA/Metal vars) over the in-place
#     route, on CPU vars (crates/downhill-candle/examples/host_round_trip.rs).
# Shapes: the anchors' 10M x 1, 10M as 1000 tensors, 1M as 1000 tensors; 2 threads.
#
#   scripts/bench_interop.sh [--quick]     # --quick: tiny shapes, prints only
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=""
[[ "${1:-}" == "--quick" ]] && QUICK="--quick"
export RAYON_NUM_THREADS=2

cargo build --release -q -p downhill-burn --example bench --example host_profile
cargo build --release -q -p downhill-candle --example host_round_trip
start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
burn=$(target/release/examples/bench $QUICK)
profile=$(target/release/examples/host_profile $QUICK)
candle=$(target/release/examples/host_round_trip $QUICK)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
secs=$(( $(date +%s) - start ))
commit=$(git rev-parse HEAD)
git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || commit="$commit (with uncommitted changes)"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

section=$(cat <<MD
<!-- interop:begin -->
## Interop: burn 0.22 and candle devices (2 threads)

\`scripts/bench_interop.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$commit\`, $cpu, $(nproc) CPUs, $(rustc --version), RAYON_NUM_THREADS=2, ${secs} s; load average before / after: $load_before / $load_after. One run; best of 10 timed steps after 3 warm-up steps.

burn's optimizers on the NdArray backend against downhill's through \`downhill-burn\` (\`ModuleOptimizer::step\` over a model of 1-D parameters, gradients fixed):

$burn

Where the host round trip's time goes (\`crates/downhill-burn/examples/host_profile.rs\`: the burn calls of the adapter's host step timed one by one, AdamW, NdArray; "shared": a tensor whose buffer another tensor also holds, as the gradients above, which the bench keeps and clones; "unique": a gradient fresh from \`backward\`):

$profile

candle vars: the host round trip (what vars on CUDA or Metal take: copy to host, step, copy back) against the in-place route, both on CPU vars, Adam:

$candle
<!-- interop:end -->
MD
)
if [[ -n "$QUICK" ]]; then
  echo "$section"
  exit 0
fi
python3 - "$section" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
section = sys.argv[1]
pattern = re.compile(r"<!-- interop:begin -->.*?<!-- interop:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
echo "$section"
echo "wrote BENCHMARKS.md"
