#!/usr/bin/env bash
# Wall time of a *second* `sashimi-generate --compile` of the same checkpoint (the compiled tier steps come
# from the on-disk cache), this code beside an older checkout (issue 18; figures in docs/benchmarks.md):
#
#     OLD=/path/to/checkout-of-23f8b45 bash bench/gen_cache.sh [OUT_DIR] [ROUNDS]
#
# The quickstart model (jobs/quickstart.yaml) with fresh seeded weights, 1 s of audio at batch 1, timed from
# command start to the WAV on disk. Each code writes its own checkpoint of the same model and has its own
# compile cache and Inductor cache; one compiling first run each fills them, then ROUNDS (default 3) rounds of
# second runs alternate old/new so the VM's drift hits both. OLD runs with this repository's .venv and
# PYTHONPATH=$OLD. Prints one line per run; `rows.tsv` holds them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-bench-out/gen-cache}"
ROUNDS="${2:-3}"
: "${OLD:?set OLD to a checkout of 23f8b45 (the code before issue 18)}"
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
ROWS="$OUT_DIR/rows.tsv"
printf 'code\trun\twall_s\tcompile_s\tgenerate_s\n' > "$ROWS"

(cd "$OLD" && PYTHONPATH="$OLD" "$PY" - "$ROOT/jobs/quickstart.yaml" "$OUT_DIR/ckpt-old" <<'PYEOF'
import sys
import torch
import yaml
from cluster.checkpoint import capture_rng, make_payload, save_checkpoint_dir
from cluster.config import job_from_dict
from sashimi import SaShiMi
job = job_from_dict(yaml.safe_load(open(sys.argv[1])), sys.argv[1])
torch.manual_seed(0)
net = SaShiMi(job.model)
save_checkpoint_dir(sys.argv[2], make_payload(model_state=net.state_dict(), optimizer_state={}, scheduler_state={},
                    step=0, data_seed=0, world_size=1, job=job.to_dict(), rng={"per_rank": [capture_rng()]},
                    sample_rate=16000))
PYEOF
)
NEW_CKPT=$(cd "$ROOT" && "$PY" - "$ROOT/jobs/quickstart.yaml" "$OUT_DIR/run-new" <<'PYEOF'
import sys
import torch
from cluster.checkpoint import CheckpointManager, TrainState
from cluster.driver.jobs import load_job
from cluster.tasks import task_of
job = load_job(sys.argv[1])
torch.manual_seed(0)
net = task_of(job).build_model()
print(CheckpointManager(job, sys.argv[2], model=net, state=TrainState(), sample_rate=16000).save())
PYEOF
)
NEW_CKPT=$(echo "$NEW_CKPT" | tail -1)

one() {  # CODE RUN
    local code=$1 run=$2 out="$OUT_DIR/out-$1-$2" t0 t1
    rm -rf "$out"
    t0=$(date +%s.%N)
    if [ "$code" = old ]; then
        (cd "$OLD" && PYTHONPATH="$OLD" SASHIMI_COMPILE_CACHE="$OUT_DIR/cache-old" TORCHINDUCTOR_CACHE_DIR="$OUT_DIR/inductor-old" \
            "$PY" -m cluster.generate_cli "$OUT_DIR/ckpt-old" --seconds 1 --compile --seed 0 --quiet --out "$out") > "$out.log" 2>&1
    else
        (cd "$ROOT" && SASHIMI_COMPILE_CACHE="$OUT_DIR/cache-new" TORCHINDUCTOR_CACHE_DIR="$OUT_DIR/inductor-new" \
            "$PY" -m cluster.tools.generate "$NEW_CKPT" --seconds 1 --compile --seed 0 --quiet --out "$out") > "$out.log" 2>&1
    fi
    t1=$(date +%s.%N)
    ls "$out"/*.wav > /dev/null  # the WAV exists, or the run failed
    printf '%s\t%s\t%.1f\t%s\n' "$code" "$run" "$(echo "$t1 - $t0" | bc)" "$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))
print('%.1f\t%.1f' % (r['compile_seconds'], r['generate_seconds']))" "$out/generation.json")" | tee -a "$ROWS"
}

rm -rf "$OUT_DIR"/cache-* "$OUT_DIR"/inductor-*
one old first
one new first
for i in $(seq "$ROUNDS"); do
    one old "second-$i"
    one new "second-$i"
done
