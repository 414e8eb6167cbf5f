"""The Ray-free trainer on CUDA (``pytest -m gpu``; bench/gpu.sh runs it): each skips without a CUDA device.
bench/gpu_trainer.py runs the same paths longer and with figures; these are the pass/fail checks."""
from __future__ import annotations

import pytest
import torch

from cluster import checkpoint as ck
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster_helpers import assert_same_training_state, tiny_job, write_job

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only test: no CUDA device here")
STEPS = {"training": {"max_steps": 4}, "checkpoint": {"every": 2, "keep": 10},
         "eval": {"every": 2, "val_batches": 1, "val_batch_size": 2, "generate_samples": 64}}


def _run(tmp_path, shards, name, overrides=()):
    path = write_job(tmp_path / f"{name}.yaml", tiny_job(shards, tmp_path / "runs", name, **STEPS))
    return run_local(load_job(path, list(overrides)), str(path), device="cuda")


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trainer_trains_on_cuda_at_each_precision(tmp_path, shards, precision):
    """Model, batches, validation and the generated clip on the GPU (the trainer once left the model on the
    CPU when no Ray prepare_model moved it); the checkpoint is readable on a CPU."""
    reports = _run(tmp_path, shards, f"p-{precision}", [f"training.precision={precision}"])
    assert [r["step"] for r in reports] == [2, 4]
    assert all(r["nonfinite_steps"] == 0 and r["val_nll_bits"] == r["val_nll_bits"] for r in reports)
    state = ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / f"p-{precision}"))
    assert all(v.device.type == "cpu" for v in state["model"].values())
    if precision == "fp16":
        assert state["grad_scaler"]["scale"] > 0  # the GradScaler's state is saved for exact resume


@pytest.mark.gpu
@cuda_only
def test_stop_and_resume_on_cuda_equals_uninterrupted(tmp_path, shards):
    """Exact resume on the GPU (CUDA RNG restored, optimiser state back on the device). cuFFT and the
    embedding's backward may reorder float sums between runs: 1e-6 absolute allows that noise only."""
    _run(tmp_path, shards, "clean")
    _run(tmp_path, shards, "resumed", ["training.max_steps=2"])
    second = _run(tmp_path, shards, "resumed")
    assert [r["step"] for r in second] == [4] and second[0]["resumed_from"] == 2
    clean, resumed = (ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / n)) for n in ("clean", "resumed"))
    assert clean["step"] == resumed["step"] == 4
    assert_same_training_state(clean, resumed, atol=1e-6)
