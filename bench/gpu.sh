#!/usr/bin/env bash
# The GPU figures in one command, on a GPU machine as it really is: the machine's own Python and torch
# (never reinstalled), no network, the few missing packages carried as wheels (bench/gpu_carry.sh builds
# .carry/ here; documented in docs/benchmarks.md, "GPU benchmark"):
#
#     bash bench/gpu_carry.sh PATH/TO/state-spaces-s4     # here, once: .carry/ (~38 MiB)
#     bash bench/gpu.sh                                    # there (device tool: carry [".carry"]); figures under $OUT
#     bash bench/gpu.sh --rehearse                         # here, on the CPU: the same install and every part
#                                                          # in miniature (CUDA-only parts skip, saying so)
#
# Install: pip install --no-index --no-deps --target $SITE .carry/wheels/*.whl (+ Ray's missing dependencies,
# and Ray itself unpacked from .carry/ray/ray-site.tar.xz); PYTHONPATH=<checkout>:$SITE; no venv, nothing
# fetched. Then, each part under `timeout` (limits overridable: T_PYTEST ...), its log in $OUT/<part>.log:
#   a. pytest-gpu       pytest -m gpu: CUDA conv == step, Cauchy backends incl. PyKeOps, bf16 step, compiled
#                       generation == eager, the Trainer on CUDA (tests/sashimi/test_gpu.py, tests/cluster/test_gpu_trainer.py)
#   b. trainer          bench/gpu_trainer.py: the Trainer without Ray, NCCL at world size 1, quickstart model
#                       fp32/bf16/fp16 for 300 steps; exact resume; 2 ranks sharing the GPU over gloo
#   c. bench-ours       python -m bench.model --device cuda: training at L 16000/128000, batch 1/8, fp32/bf16;
#                       generation at batch 1/16/256 (compiled and eager); each against its roofline bound
#      bench-official   bench/official_sashimi.py: the paper's own SaShiMi (.carry/peer/s4) timed the same way
#      bench-compiled   ours and the official with torch.compile at L 16000, batch 8 (compiling is slow: last)
#   d. ray-1gpu         sashimi-train jobs/quickstart.yaml with scaling.use_gpu (1 worker, NCCL), if Ray is importable
#      ray-2x0.5gpu     2 workers sharing the GPU (gloo), 20 steps
# A failing or timed-out part is recorded in summary.txt and the script carries on. Exit status: the number
# of failed parts. GPU_SH_PARTS picks parts (default: pytest,trainer,bench,official,compiled,ray); all of them
# take about 9 minutes on an H200, over one device call's 10: run them as two calls, e.g.
# GPU_SH_PARTS=pytest,trainer,bench,official,compiled (~8 min), then GPU_SH_PARTS=ray (~3 min).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
PY="${PYTHON:-python3}"
CARRY="${GPU_SH_CARRY:-$ROOT/.carry}"
SITE="${GPU_SH_SITE:-/tmp/sashimi-gpu-site}"
SCRATCH="${GPU_SH_SCRATCH:-/tmp/sashimi-gpu}"
OUT_DIR="${OUT:-$ROOT/bench-out}"
mkdir -p "$OUT_DIR" "$SCRATCH"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
say() { echo "[gpu.sh] $*" | tee -a "$SUMMARY"; }
FAILED=0
T0=$SECONDS
PARTS=",${GPU_SH_PARTS:-pytest,trainer,bench,official,compiled,ray},"
want() { [[ "$PARTS" == *",$1,"* ]]; }

# ---- install what the machine lacks, from the carried folder (no network, no venv) ----
install_carried() {
    local wheels=()
    [ -d "$CARRY/wheels" ] && wheels+=("$CARRY"/wheels/*.whl)
    [ -d "$CARRY/ray" ] && wheels+=("$CARRY"/ray/*.whl)
    if [ "${#wheels[@]}" -eq 0 ]; then
        say "no carried wheels in $CARRY (bash bench/gpu_carry.sh builds them): using what the machine has"
        return 0
    fi
    rm -rf "$SITE" && mkdir -p "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" > "$OUT_DIR/install.log" 2>&1 || { say "install FAILED (install.log)"; return 1; }
    if [ -f "$CARRY/ray/ray-site.tar.xz" ]; then  # Python's own lzma: the machine need not have xz
        "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" \
            "$CARRY/ray/ray-site.tar.xz" "$SITE" >> "$OUT_DIR/install.log" 2>&1 \
            || say "unpacking Ray FAILED (install.log): the Ray parts will be skipped"
    fi
    say "installed ${#wheels[@]} carried wheels$([ -f "$CARRY/ray/ray-site.tar.xz" ] && echo ' and Ray') into $SITE in $((SECONDS - T0)) s"
}
install_carried || exit 1
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-$SCRATCH/keops}"
export PATH="$SITE/bin:$PATH"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi 2>&1
    "$PY" - <<'EOF' 2>&1
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, f"{p.total_memory / 2**30:.1f} GiB, sm {p.major}.{p.minor}, {p.multi_processor_count} SMs")
for mod in ("torchaudio", "numpy", "webdataset", "soundfile", "pykeops", "keopscore", "fsspec", "tensorboard",
            "yaml", "tqdm", "PIL", "pytest", "ray", "pydantic", "jsonschema", "sashimi", "data_prep", "cluster"):
    try:
        m = importlib.import_module(mod)
        print(f"  {mod:<12} {getattr(m, '__version__', '')} {getattr(m, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {mod:<12} NOT IMPORTABLE: {type(exc).__name__}: {exc}")
EOF
} > "$OUT_DIR/env.txt"
grep -q "NOT IMPORTABLE" "$OUT_DIR/env.txt" && say "some modules are not importable (env.txt):" && \
    grep "NOT IMPORTABLE" "$OUT_DIR/env.txt" | sed 's/^/    /' | tee -a "$SUMMARY"
CUDA=0
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && CUDA=1
if [ "$CUDA" = 1 ]; then
    say "GPU: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
elif [ "$REHEARSE" = 1 ]; then
    say "rehearsal on the CPU: CUDA-only parts skip; the others run in miniature"
else
    say "no CUDA device (torch.cuda.is_available() is False; see env.txt): nothing to measure. --rehearse runs the CPU rehearsal"
    exit 0
fi

# part NAME LIMIT_S CMD...: run under timeout, log to NAME.log, record the outcome.
part() {
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS rc
    echo "[gpu.sh] $name: $* (limit ${limit} s)"
    timeout -k 10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    local dt=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        say "$name: ok in ${dt} s (log: $name.log)"
    else
        FAILED=$((FAILED + 1))
        local why="exit $rc"
        { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && why="timed out after ${limit} s"
        say "$name: FAILED ($why, ${dt} s); last lines of $name.log:"
        tail -n 15 "$OUT_DIR/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
}
JSONL="$OUT_DIR/bench.jsonl"
rm -f "$JSONL"
S4="$CARRY/peer/s4"

# a. CUDA-only tests (they skip on the CPU)
want pytest && part pytest-gpu "${T_PYTEST:-100}" "$PY" -m pytest -m gpu -v -rA -p no:cacheprovider --junitxml="$OUT_DIR/pytest-gpu.xml" \
    tests/cluster/test_gpu_trainer.py tests/sashimi/test_gpu.py

# b. the Trainer without Ray
if ! want trainer; then
    :
elif [ "$CUDA" = 1 ]; then
    part trainer "${T_TRAINER:-120}" "$PY" bench/gpu_trainer.py --out "$SCRATCH/trainer"
else
    part trainer "${T_TRAINER:-300}" "$PY" bench/gpu_trainer.py --out "$SCRATCH/trainer" --device cpu --steps 10 \
        --resume-steps 4 --ddp-steps 4 --max-val-nll 9
fi
cp "$SCRATCH/trainer/results.json" "$OUT_DIR/trainer.json" 2>/dev/null

# c. the model benchmark, ours and the paper's own, eager first, compiled last
if [ "$CUDA" = 1 ]; then
    want bench && part bench-ours "${T_BENCH:-170}" "$PY" -m bench.model --device cuda --out "$JSONL" --precisions fp32,bf16 \
        --lengths 16000,128000 --batches 1,8 --gen-batches 1,16,256 --gen-modes eager,compiled --gen-samples 1024 \
        --time-budget $((${T_BENCH:-170} - 40))
    if ! want official; then
        :
    elif [ -d "$S4" ]; then
        part bench-official "${T_OFFICIAL:-90}" "$PY" bench/official_sashimi.py --s4 "$S4" --out "$JSONL" \
            --precisions fp32,bf16 --lengths 16000 --batches 1,8 --gen-batches 1,16,256 --gen-samples 128 \
            --time-budget $((${T_OFFICIAL:-90} - 25))
    else
        say "bench-official: skipped (no $S4: bash bench/gpu_carry.sh PATH/TO/state-spaces-s4)"
    fi
    want compiled && part bench-compiled "${T_COMPILED:-150}" bash -c "'$PY' -m bench.model --device cuda --out '$JSONL' \
        --precisions compiled --lengths 16000 --batches 8 --gen-batches '' --time-budget 60 && \
        { [ ! -d '$S4' ] || '$PY' bench/official_sashimi.py --s4 '$S4' --out '$JSONL' --precisions compiled \
          --lengths 16000 --batches 8 --gen-batches '' --time-budget 40; }"
else
    want bench && part bench-ours 60 "$PY" -m bench.model --device cuda --out "$JSONL"  # says it skips, exits 0
    want official && [ -d "$S4" ] && part bench-official "${T_OFFICIAL:-240}" "$PY" bench/official_sashimi.py --s4 "$S4" --device cpu \
        --out "$JSONL" --precisions fp32 --lengths 1024 --batches 1 --gen-batches 1 --gen-samples 16 --train-steps 1
fi

# d. Ray: the quickstart on the GPU (only if Ray came along)
if ! want ray; then
    :
elif "$PY" -c "import ray, ray.train.torch" > "$OUT_DIR/ray-import.log" 2>&1; then
    QS=("$PY" -m cluster.driver.cli jobs/quickstart.yaml --fresh --no-wav "checkpoint.storage=$SCRATCH/runs"
        "data.shards=$SCRATCH/trainer/data/shards")
    if [ "$CUDA" = 1 ]; then
        part ray-1gpu "${T_RAY:-120}" "${QS[@]}" name=ray-gpu1 scaling.use_gpu=true scaling.num_workers=1 \
            "scaling.resources_per_worker={CPU: 1, GPU: 1}" training.max_steps=250
        part ray-2x0.5gpu "${T_RAY2:-90}" "${QS[@]}" name=ray-gpu2x05 scaling.use_gpu=true scaling.num_workers=2 \
            "scaling.resources_per_worker={CPU: 1, GPU: 0.5}" training.max_steps=20 eval.every=20 checkpoint.every=20
    else
        part ray-cpu "${T_RAY:-240}" "${QS[@]}" name=ray-cpu scaling.num_workers=1 training.max_steps=6 \
            eval.every=6 checkpoint.every=6 eval.generate_samples=0
    fi
else
    say "ray: not importable (ray-import.log): Ray parts skipped; bash bench/gpu_carry.sh carries it"
fi

say "done in $((SECONDS - T0)) s: $FAILED part(s) failed; figures in $OUT_DIR (summary.txt, *.log, bench.jsonl, trainer.json, env.txt)"
exit "$FAILED"
