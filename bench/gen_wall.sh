#!/usr/bin/env bash
# Wall time of `sashimi-generate` from command start to the WAV, batch 1, the paper's 8-layer model with
# fresh weights, 1 s and 10 s of audio, first and second run, this code beside an older checkout
# (issue 13 C; figures in docs/benchmarks.md):
#
#     OLD=/path/to/checkout-of-b84a9f5 bash bench/gen_wall.sh [OUT_DIR]
#
# OLD must be a checkout of b84a9f5 (the code before issue 13: format-1 checkpoints, eager unless
# --compile, no compile cache); it runs with this repository's .venv and PYTHONPATH=$OLD. Each code
# writes its own checkpoint of the same seeded model. The new code's compile cache starts empty for
# each length and mode (a "first run" compiles, a "second run" finds the cache); the old code has none
# of its own; Inductor's caches are emptied before each length for both.
# Runs are interleaved old/new so the VM's drift hits both. Prints one line per run; `rows.tsv` holds them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-bench-out/gen-wall}"
: "${OLD:?set OLD to a checkout of b84a9f5}"
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
ROWS="$OUT_DIR/rows.tsv"
printf 'code\tseconds\tmode\trun\twall_s\tcompiled\tcompile_s\tgenerate_s\tscore_s\n' > "$ROWS"

(cd "$OLD" && PYTHONPATH="$OLD" "$PY" - "$OUT_DIR/ckpt-old" <<'EOF'
import os, sys
import torch
from cluster.checkpoint import atomic_torch_save, make_state
from cluster.config import job_from_dict
from sashimi import SaShiMi, SaShiMiConfig
torch.manual_seed(0)
net = SaShiMi(SaShiMiConfig())
job = job_from_dict({"name": "wall", "data": {"shards": "/nonexistent-shards"}}, "<wall>")
os.makedirs(sys.argv[1], exist_ok=True)
atomic_torch_save(make_state(model_state=net.state_dict(), optimizer_state={}, scheduler_state={}, step=0,
                             data_seed=0, world_size=1, job=job.to_dict()), os.path.join(sys.argv[1], "state.pt"))
EOF
)
NEW_CKPT=$(cd "$ROOT" && "$PY" - "$OUT_DIR/run-new" <<'EOF'
import sys
import torch
from cluster.checkpoint import CheckpointManager, TrainState
from cluster.config import job_from_dict
from sashimi import SaShiMi, SaShiMiConfig
torch.manual_seed(0)
net = SaShiMi(SaShiMiConfig())
job = job_from_dict({"name": "wall", "data": {"shards": "/nonexistent-shards"}}, "<wall>")
print(CheckpointManager(job, sys.argv[1], model=net, state=TrainState(), sample_rate=16000).save())
EOF
)

# one run: CODE SECONDS MODE RUN [flags...]; MODE names the flags (default = none)
one() {
    local code=$1 secs=$2 mode=$3 run=$4; shift 4
    local out="$OUT_DIR/out-$code-$secs-$mode-$run" t0 t1 decision wall
    rm -rf "$out"
    t0=$(date +%s.%N)
    if [ "$code" = old ]; then
        (cd "$OLD" && PYTHONPATH="$OLD" "$PY" -m cluster.generate_cli "$OUT_DIR/ckpt-old" --seconds "$secs" \
            --seed 0 --quiet --out "$out" "$@") > "$out.log" 2>&1
    else
        (cd "$ROOT" && SASHIMI_COMPILE_CACHE="$OUT_DIR/cache-$secs-$mode" "$PY" -m cluster.tools.generate \
            "$NEW_CKPT" --seconds "$secs" --seed 0 --quiet --out "$out" "$@") > "$out.log" 2>&1
    fi
    t1=$(date +%s.%N)
    ls "$out"/*.wav > /dev/null  # the WAV exists, or the run failed
    # what generation.json says: compiled or not (the new code records its auto decision there), the timed parts
    decision=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))
print('\t'.join([str(bool(r['compile'])), *('%.1f' % r.get(k, float('nan')) for k in
                  ('compile_seconds', 'generate_seconds', 'score_seconds'))]))" "$out/generation.json")
    wall=$(echo "$t1 - $t0" | bc)
    printf '%s\t%s\t%s\t%s\t%.1f\t%s\n' "$code" "$secs" "$mode" "$run" "$wall" "$decision" | tee -a "$ROWS"
}

# Inductor's own on-disk caches start empty too, for both codes (the old code's second compiled run may use them)
export TORCHINDUCTOR_CACHE_DIR="$OUT_DIR/inductor-cache"
rm -rf "$OUT_DIR"/cache-* "$TORCHINDUCTOR_CACHE_DIR"
for run in first second; do
    one old 1 default "$run"
    one new 1 default "$run"
    one old 1 compile "$run" --compile
    one new 1 compile "$run" --compile
done
rm -rf "$OUT_DIR"/cache-* "$TORCHINDUCTOR_CACHE_DIR"  # the 10 s runs start from empty caches too
for run in first second; do
    one old 10 compile "$run" --compile
    one new 10 default "$run"
done
if [ "${GEN_WALL_EAGER10:-0}" = 1 ]; then  # eager 10 s: ~15 min per run on 2 slow cores, so opt-in
    one old 10 default first
    one new 10 eager first --eager
fi
