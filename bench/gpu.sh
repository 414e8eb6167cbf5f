#!/usr/bin/env bash
# The GPU figures in one command (issue 13, part B; documented in docs/benchmarks.md):
#
#     bash bench/gpu.sh            # from the repository root or anywhere; figures under $OUT or bench-out/
#
#   1. pytest -m gpu                      CUDA-only tests (tests/sashimi/test_gpu.py)
#   2. the quickstart, scaling.use_gpu    1 worker on 1 GPU (NCCL path, world size 1)
#   3. python -m sashimi.bench --device cuda   training / generation samples/s against the roofline
#   4. the quickstart, 2 workers sharing the GPU (resources_per_worker GPU 0.5): an attempt, expected to
#      fail in NCCL ("Duplicate GPU detected", ray-project/ray#48012); its log records what happened
#
# Each part runs under `timeout` (limits below, overridable: T_PYTEST, T_QUICKSTART, T_BENCH, T_FRACTIONAL;
# GPU_SH_FRACTIONAL=0 skips part 4), about 8 minutes in all after the install; a failing or timed-out
# part is recorded in summary.txt and the script carries on. Without a CUDA GPU it skips every CUDA
# part, says so, and exits 0 (it does not run the quickstart on the CPU). Exit status on a GPU: the
# number of failed parts (0 = all passed).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT:-bench-out}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
say() { echo "[gpu.sh] $*" | tee -a "$SUMMARY"; }
FAILED=0

# ---- is there a CUDA GPU at all? (decided before any install, so a CPU machine exits at once) ----
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    say "no CUDA GPU on this machine (nvidia-smi missing or lists no GPU): skipping pytest -m gpu, the GPU quickstart and python -m sashimi.bench --device cuda"
    say "figures pending: run bash bench/gpu.sh on a machine with an NVIDIA GPU"
    exit 0
fi

# ---- install (a fresh machine: the README's install command) ----
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    say "no .venv: creating it (python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]')"
    if ! timeout "${T_INSTALL:-900}" bash -c "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'" \
            > "$OUT_DIR/install.log" 2>&1; then
        say "install FAILED (see install.log); nothing else can run"
        exit 1
    fi
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
    nvidia-smi 2>&1
    "$PY" - <<'EOF' 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, f"{p.total_memory / 2**30:.1f} GiB, sm {p.major}.{p.minor}, {p.multi_processor_count} SMs")
try:
    import pykeops
    print("pykeops", pykeops.__version__)
except Exception as exc:
    print("pykeops import failed:", exc)
EOF
} > "$OUT_DIR/env.txt"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    say "nvidia-smi sees a GPU but torch.cuda.is_available() is False (driver / CUDA runtime mismatch? see env.txt): skipping the CUDA parts"
    exit 1
fi
say "GPU: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"

# part NAME LIMIT_S CMD...: run under timeout, log to NAME.log, record the outcome.
part() {
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS rc
    echo "[gpu.sh] $name: $* (limit ${limit} s)"
    timeout -k 15 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    local dt=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        say "$name: ok in ${dt} s (log: $name.log)"
    else
        [ -n "${ATTEMPT:-}" ] || FAILED=$((FAILED + 1))  # an attempt's failure is recorded, not counted
        local why="exit $rc"
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${limit} s"
        say "$name: FAILED ($why, ${dt} s); last lines of $name.log:"
        tail -n 15 "$OUT_DIR/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
}

export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-$ROOT/.keops_cache}"
export PYTHONUNBUFFERED=1

# 1. CUDA-only tests
part pytest-gpu "${T_PYTEST:-90}" "$PY" -m pytest -m gpu -q -rA --junitxml="$OUT_DIR/pytest-gpu.xml" tests/sashimi/test_gpu.py

# 2. the quickstart on 1 GPU (the shipped job, use_gpu on, 1 worker holding the whole GPU)
QS=("$ROOT/.venv/bin/sashimi-train" jobs/quickstart.yaml --fresh --no-wav
    scaling.use_gpu=true scaling.num_workers=1 "scaling.resources_per_worker={CPU: 1, GPU: 1}"
    checkpoint.storage=runs/gpu-bench)
part quickstart-1gpu "${T_QUICKSTART:-180}" "${QS[@]}" name=quickstart-gpu1 "training.max_steps=${QS_STEPS:-250}"

# 3. the model bench on the GPU; it stops starting measurements after its own budget (figures so far kept)
T_BENCH="${T_BENCH:-150}"
rm -f "$OUT_DIR/bench.jsonl"
part bench-cuda "$T_BENCH" "$PY" -m sashimi.bench --device cuda --out "$OUT_DIR/bench.jsonl" \
    --time-budget $((T_BENCH - 40)) ${BENCH_ARGS:-}

# 4. two workers sharing the one GPU (fractional resources_per_worker): short, an attempt
if [ "${GPU_SH_FRACTIONAL:-1}" != "0" ]; then
    ATTEMPT=1 part quickstart-2x0.5gpu "${T_FRACTIONAL:-60}" "${QS[@]}" name=quickstart-gpu2x05 scaling.num_workers=2 \
        "scaling.resources_per_worker={CPU: 1, GPU: 0.5}" training.max_steps=20 eval.every=1000 checkpoint.every=1000
fi

say "done: $FAILED part(s) failed; figures in $OUT_DIR (summary.txt, bench-cuda.log, bench.jsonl, pytest-gpu.xml, env.txt, *.log)"
exit "$FAILED"
