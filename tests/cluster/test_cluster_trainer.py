"""The training loop without Ray (cluster.driver.local, and two ranks over torch.distributed, all through
train_rank): exact resume, injected faults through the hook object, non-finite steps, checkpoint policy,
which config changes a resume accepts. The Ray runs of the same scenarios are in
tests/integration/test_cluster_ray.py / test_reliability_ray.py (slow)."""
from __future__ import annotations

import dataclasses
import gc
import json
import os
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster import checkpoint as ck
from cluster.checkpoint import store
from cluster.checkpoint.compat import CheckpointMismatchError
from cluster.checkpoint.format import NonFiniteCheckpointError
from cluster.config import JobConfigError
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.driver.prepare import prepare
from cluster.seeds import seed_all
from cluster.tasks import task_of
from cluster.train.faults import FAULTS_ENV, FaultPlan, NoFaults
from cluster.train.precision import Precision
from cluster.train.runtime import Runtime
from cluster.train.trainer import NonFiniteTrainingError, Trainer, train_rank
from cluster_helpers import assert_same_training_state, spawn_ranks, tiny_job, write_job
from data_prep.manifest import load_manifest

STEPS = {"training": {"max_steps": 6}, "checkpoint": {"every": 2, "keep": 10},
         "schedule": {"kind": "plateau", "warmup_steps": 3, "patience": 0},
         "eval": {"every": 2, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0}}


def _job(tmp_path, shards, name, overrides=(), **sections):
    merged = {k: dict(v) for k, v in STEPS.items()}
    for k, v in sections.items():
        merged[k] = {**merged.get(k, {}), **v}
    path = write_job(tmp_path / f"{name}.yaml", tiny_job(shards, tmp_path / "runs", name, **merged))
    return load_job(path, list(overrides)), str(path)


def _run(tmp_path, shards, name, overrides=(), faults=None, **sections):
    job, where = _job(tmp_path, shards, name, overrides, **sections)
    return run_local(job, where, faults=faults)


def _latest(tmp_path, name):
    return ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / name))


def _assert_same(a, b):
    assert a["step"] == b["step"]
    assert_same_training_state(a, b)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, shards):
    """The uninterrupted 6-step run every faulted run must reproduce."""
    root = tmp_path_factory.mktemp("clean")
    reports = _run(root, shards, "clean")
    assert [r["step"] for r in reports] == [2, 4, 6] and reports[-1]["resumed_from"] == -1
    return _latest(root, "clean")


def test_stop_and_resume_in_one_process_equals_uninterrupted(tmp_path, shards, clean):
    first = _run(tmp_path, shards, "resumed", ["training.max_steps=4"])
    assert first[-1]["step"] == 4
    second = _run(tmp_path, shards, "resumed")
    assert [r["step"] for r in second] == [6] and second[0]["resumed_from"] == 4
    resumed = _latest(tmp_path, "resumed")
    _assert_same(clean, resumed)
    assert clean["metrics"]["val_nll_bits"] == pytest.approx(resumed["metrics"]["val_nll_bits"], abs=1e-6)
    first_ckpt = ck.validate_checkpoint(tmp_path / "runs" / "resumed" / store.checkpoint_dir_name(2))
    moved = max((clean["model"][k] - first_ckpt["model"][k]).abs().max().item() for k in clean["model"])
    assert moved > 1e-4  # training moved the weights: equality above is not the initialisation


def test_raised_fault_then_rerun_matches_clean(tmp_path, shards, clean):
    marks = tmp_path / "marks"
    marks.mkdir()
    plan = FaultPlan({"dir": str(marks), "raise": [[0, 3]]})
    with pytest.raises(RuntimeError, match="injected fault at step 3 on rank 0"):
        _run(tmp_path, shards, "raised", faults=plan)
    assert (marks / "raise-r0-s3").exists()
    again = _run(tmp_path, shards, "raised", faults=plan)  # fires once: the restart runs clean
    assert again[0]["resumed_from"] == 2 and again[-1]["step"] == 6
    _assert_same(clean, _latest(tmp_path, "raised"))


class _Crash(Exception):
    pass


class _InProcessPlan(FaultPlan):
    """A kill or tear that raises instead of SIGKILLing this (the test) process."""

    def die(self):
        raise _Crash("killed")


def test_torn_checkpoint_in_one_process_falls_back_and_matches_clean(tmp_path, shards, clean):
    marks = tmp_path / "marks"
    marks.mkdir()
    plan = _InProcessPlan({"dir": str(marks), "tear": [4]})
    with pytest.raises(_Crash):
        _run(tmp_path, shards, "torn", faults=plan)
    run_dir = tmp_path / "runs" / "torn"
    torn = run_dir / store.checkpoint_dir_name(4)
    with pytest.raises(ck.CheckpointError, match="unreadable"):
        ck.validate_checkpoint(torn)
    again = _run(tmp_path, shards, "torn", faults=plan)
    assert again[0]["resumed_from"] == 2 and again[0]["resume_skipped_invalid"] == 1
    names = [store.name_of(d) for d in ck.list_checkpoints(run_dir)]
    assert any(n.startswith(torn.name + "-r") for n in names), names  # rewritten under a new name
    _assert_same(clean, _latest(tmp_path, "torn"))


def test_nan_steps_are_skipped_counted_and_stop_after_the_limit(tmp_path, shards):
    plan = FaultPlan({"nan": [[0, 2], [0, 3]]})
    reports = _run(tmp_path, shards, "nan", ["training.max_steps=4", "checkpoint.every=1"], faults=plan)
    assert [r["nonfinite_steps"] for r in reports] == [0, 1, 2, 2]
    run_dir = tmp_path / "runs" / "nan"
    s1, s3, s4 = (ck.validate_checkpoint(run_dir / store.checkpoint_dir_name(s)) for s in (1, 3, 4))
    for k in s1["model"]:  # no optimiser step at 2 and 3
        assert torch.equal(s1["model"][k], s3["model"][k]), k
    assert any(not torch.equal(s3["model"][k], s4["model"][k]) for k in s3["model"])
    assert s4["nonfinite_steps"] == 2
    stop = FaultPlan({"nan": [[0, 1], [0, 2], [0, 3]]})
    with pytest.raises(NonFiniteTrainingError, match=r"2 consecutive steps .*max_nonfinite_steps=2"):
        _run(tmp_path, shards, "nanstop", ["training.max_nonfinite_steps=2"], faults=stop)
    assert ck.list_checkpoints(tmp_path / "runs" / "nanstop") == []


def test_checkpoints_store_the_manifest_sample_rate_and_keep_the_newest(tmp_path, shards):
    _run(tmp_path, shards, "keep", ["training.max_steps=4", "checkpoint.every=1", "checkpoint.keep=2"])
    run_dir = tmp_path / "runs" / "keep"
    assert [store.name_of(d) for d in ck.list_checkpoints(run_dir)] == [store.checkpoint_dir_name(3), store.checkpoint_dir_name(4)]
    state = _latest(tmp_path, "keep")
    assert state["sample_rate"] == load_manifest(shards)["sample_rate"] == 16000
    assert state["data"] == {"seed": 0, "step": 4, "world_size": 1} and len(state["rng"]["per_rank"]) == 1
    loaded = ck.load_checkpoint(run_dir / store.checkpoint_dir_name(4))
    assert loaded.sample_rate == 16000 and loaded.step == 4 and loaded.quantization == "mu-law"
    assert loaded.job.model.d_model == 16 and loaded.job.name == "keep"


def test_nonfinite_weights_are_never_checkpointed(tmp_path, shards):
    job, _ = _job(tmp_path, shards, "w")
    model = torch.nn.Linear(2, 1)
    manager = ck.CheckpointManager(job, str(tmp_path / "run"), model=model, state=ck.TrainState(step=3))
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    with pytest.raises(NonFiniteCheckpointError, match=r"non-finite at step 3 \(weight\); refusing"):
        manager.save()
    assert not (tmp_path / "run").exists()
    with torch.no_grad():
        model.weight[0, 1] = 1.0
    assert ck.validate_checkpoint(manager.save())["step"] == 3
    assert [manager.due(s) for s in (1, 2, 3, 4, 6)] == [False, True, False, True, True]  # every 2, and the last


def test_fault_plans_are_absent_unless_set_and_checked(monkeypatch):
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    assert FaultPlan.from_env("j") is None
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"other": {"nan": [[0, 1]]}}))
    assert FaultPlan.from_env("j") is None and FaultPlan.from_env("other") is not None
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['kil'\]"):
        FaultPlan({"dir": "/tmp", "kil": [[0, 1]]})
    with pytest.raises(ValueError, match="marker"):
        FaultPlan({"raise": [[0, 1]]})
    loss = torch.tensor(2.0)
    assert NoFaults().poison(loss, 1, 0) is loss
    assert torch.isnan(FaultPlan({"nan": [[1, 5]]}).poison(loss, 5, 1))
    assert FaultPlan({"nan": [[1, 5]]}).poison(loss, 5, 0) is loss


# ---------------------------------------------------------------- two ranks, no Ray

def _rank(rank, world, port, config, out, faults=None):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        reports, metrics = [], []

        def report(m, checkpoint_dir):  # the manager wrote rank 0's checkpoint into the run dir itself
            reports.append({"step": m["step"], "checkpoint": checkpoint_dir is not None})
            metrics.append(dict(m))

        runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"), report=report,
                          prepare_model=torch.nn.parallel.DistributedDataParallel)
        train_rank(config, runtime, faults=FaultPlan(faults) if faults else None)
        Path(out, f"r{rank}.json").write_text(json.dumps(reports))
        Path(out, f"m{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_two_ranks_over_torch_distributed_without_ray(tmp_path, shards):
    job, where = _job(tmp_path, shards, "ddp", ["training.max_steps=4", "scaling.num_workers=2"])
    spawn_ranks(_rank, 2, prepare(job, where), str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1))
    assert r0 == [{"step": 2, "checkpoint": True}, {"step": 4, "checkpoint": True}]
    assert r1 == [{"step": 2, "checkpoint": False}, {"step": 4, "checkpoint": False}]  # same barriers
    state = _latest(tmp_path, "ddp")
    assert state["data"]["world_size"] == 2 and len(state["rng"]["per_rank"]) == 2
    assert not torch.equal(state["rng"]["per_rank"][0]["torch"], state["rng"]["per_rank"][1]["torch"])
    assert os.path.isdir(tmp_path / "runs" / "ddp" / "tensorboard")  # rank 0's board


def test_fused_vote_skips_a_nan_step_on_every_rank(tmp_path, shards):
    """Rank 1 alone gets a NaN loss at step 2: the one-number vote makes both ranks skip that optimiser
    step and count it, and both go on through the same barriers (weights unchanged across step 2)."""
    job, where = _job(tmp_path, shards, "ddpnan", ["training.max_steps=3", "scaling.num_workers=2",
                                                   "checkpoint.every=1", "eval.val_batches=3"])
    spawn_ranks(_rank, 2, prepare(job, where), str(tmp_path), {"nan": [[1, 2]]})
    m0, m1 = (json.loads((tmp_path / f"m{r}.json").read_text()) for r in (0, 1))
    assert [m["nonfinite_steps"] for m in m0] == [m["nonfinite_steps"] for m in m1] == [0, 1, 1]
    assert m0[1]["val_nll_bits"] == m1[1]["val_nll_bits"]  # every rank derives the same val numbers
    run_dir = tmp_path / "runs" / "ddpnan"
    s1, s2, s3 = (ck.validate_checkpoint(run_dir / store.checkpoint_dir_name(s)) for s in (1, 2, 3))
    for k in s1["model"]:
        assert torch.equal(s1["model"][k], s2["model"][k]), k
    assert any(not torch.equal(s2["model"][k], s3["model"][k]) for k in s2["model"])
    assert s3["nonfinite_steps"] == 1


def _val_rank(rank, world, port, config, out):
    """One rank's evaluation at step 0 (no training): its share of the val batches, merged over ranks.
    With world > 1 the trainer (and the DDP reducer it holds) is freed before the group is destroyed:
    a reducer outliving its gloo group hangs in the group's destructor (seen in CI)."""
    import torch.distributed as dist

    if world == 1:
        return _evaluate_at_step_0(rank, world, config, out)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _evaluate_at_step_0(rank, world, config, out)
        gc.collect()
    finally:
        dist.destroy_process_group()


def _evaluate_at_step_0(rank, world, config, out):
    runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"), report=lambda m, d: None,
                      prepare_model=torch.nn.parallel.DistributedDataParallel if world > 1 else (lambda m: m))
    trainer = Trainer(config, runtime)  # the initial weights, evaluated without training a step
    metrics = trainer.evaluate()
    Path(out, f"val{world}-r{rank}.json").write_text(json.dumps({"metrics": metrics, "batches": len(trainer.val)}))
    return trainer


def test_validation_shared_by_two_ranks_equals_one_rank(tmp_path, shards):
    """5 val batches scored as shares of 3 and 2 on two ranks give one rank's val NLL (float64 sums merged
    by an all-reduce); on one rank the number is exactly the whole-split evaluation's. (The train split
    serves as val: the tiny corpus' val split holds only 2 clips.)"""
    job, where = _job(tmp_path, shards, "val", ["eval.val_batches=5", "eval.val_batch_size=1", "scaling.num_workers=2",
                                                "data.val_split=train"])
    config = prepare(job, where)
    spawn_ranks(_val_rank, 2, config, str(tmp_path))
    one = _val_rank(0, 1, None, config, str(tmp_path))
    r0, r1, single = (json.loads((tmp_path / f).read_text()) for f in ("val2-r0.json", "val2-r1.json", "val1-r0.json"))
    assert (r0["batches"], r1["batches"], single["batches"]) == (3, 2, 5)
    assert r0["metrics"] == r1["metrics"]
    assert r0["metrics"]["val_nll_bits"] == pytest.approx(single["metrics"]["val_nll_bits"], rel=1e-12, abs=0)
    whole = one.task.evaluate(one.raw_model, one.val, torch.device("cpu"), one.autocast)
    assert single["metrics"]["val_nll_bits"] == whole["val_nll_bits"]  # world size 1 stays exact


def _fp16():
    """The fp16 path forced on the CPU, with a loss scale so large that step 1's float16 gradients
    overflow, and a backoff that brings it to 2^10 in one step."""
    return Precision("fp16", torch.device("cpu"), init_scale=2.0 ** 100, backoff_factor=2.0 ** -90)


def test_fp16_grad_scaler_on_cpu_skips_an_overflow_and_resumes_exactly(tmp_path, shards):
    """float16 autocast + GradScaler: the overflow at step 1 is skipped without counting as non-finite
    (weights stay the initial ones, the scale drops to 1024), later steps train, and the checkpointed
    scale makes a run stopped at step 2 and resumed equal an uninterrupted one."""
    job, where = _job(tmp_path, shards, "fp16", ["training.max_steps=4", "checkpoint.every=1"])
    reports = run_local(job, where, precision=_fp16())
    assert [r["nonfinite_steps"] for r in reports] == [0, 0, 0, 0]
    run_dir = tmp_path / "runs" / "fp16"
    s1, s2, s4 = (ck.validate_checkpoint(run_dir / store.checkpoint_dir_name(s)) for s in (1, 2, 4))
    seed_all(job.seed)
    initial = task_of(job).build_model().state_dict()
    for k in initial:
        assert torch.equal(s1["model"][k], initial[k]), k
    assert s1["optimizer"]["state"] == {} and s1["grad_scaler"]["scale"] == 1024.0
    assert any(not torch.equal(s1["model"][k], s2["model"][k]) for k in initial)
    assert all(torch.isfinite(v).all() for v in s4["model"].values())

    job2, where2 = _job(tmp_path, shards, "fp16r", ["training.max_steps=2", "checkpoint.every=1"])
    run_local(job2, where2, precision=_fp16())
    job2, where2 = _job(tmp_path, shards, "fp16r", ["training.max_steps=4", "checkpoint.every=1"])
    again = run_local(job2, where2, precision=_fp16())
    assert again[0]["resumed_from"] == 2
    resumed = _latest(tmp_path, "fp16r")
    _assert_same(s4, resumed)
    assert resumed["grad_scaler"] == s4["grad_scaler"]


def test_reduced_precision_without_a_gpu_trains_in_fp32_and_says_so(tmp_path, shards, capsys):
    _run(tmp_path, shards, "fp16cpu", ["training.max_steps=2", "training.precision=fp16", "eval.val_batches=0"])
    assert capsys.readouterr().out.count("precision fp16 requested without a GPU: training in fp32") == 1
    assert _latest(tmp_path, "fp16cpu")["grad_scaler"] == {}  # no scaler ran


def test_tensorboard_logs_clips_and_audio_samples_per_s_and_every_groups_lr(tmp_path, shards):
    reports = _run(tmp_path, shards, "tb", ["training.max_steps=3", "logging.every=1", "eval.val_batches=0"])
    acc = EventAccumulator(str(tmp_path / "runs" / "tb" / "tensorboard")).Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss_bits", "train/grad_norm", "train/lr", "train/lr/decay", "train/lr/no_decay",
                "train/lr/ssm", "perf/clips_per_s", "perf/audio_samples_per_s", "perf/step_time_s"):
        assert tag in tags, tag
    assert "perf/samples_per_s" not in tags  # it counted clips: gone, not redefined
    crop = 256
    for clips, audio in zip(acc.Scalars("perf/clips_per_s"), acc.Scalars("perf/audio_samples_per_s")):
        assert audio.value == pytest.approx(crop * clips.value, rel=1e-5)
    for main, ssm in zip(acc.Scalars("train/lr/decay"), acc.Scalars("train/lr/ssm")):  # one schedule, two rates
        assert ssm.value == pytest.approx(main.value * 1e-3 / 4e-3, rel=1e-5) and main.value > 0
    assert all(0 < e.value < float("inf") for e in acc.Scalars("train/grad_norm"))
    m = reports[-1]
    assert m["perf_audio_samples_per_s"] == pytest.approx(crop * m["perf_clips_per_s"])


# ---------------------------------------------------------------- what a resume compares

def test_resume_accepts_changes_that_leave_the_weights_alone(tmp_path, shards):
    """Only the keys that decide the weights are compared on resume (SaShiMiConfig.weight_keys): another
    data.crop moves model.l_max, which an S4D model's weights do not depend on, and another Cauchy backend
    is an implementation choice: both runs resume. On DPLR, whose stored C̃ is defined at l_max, a crop
    change is refused before Ray, naming model.l_max."""
    assert _run(tmp_path, shards, "crop", ["training.max_steps=2"])[-1]["step"] == 2  # s4d, l_max = crop 256
    again = _run(tmp_path, shards, "crop", ["data.crop=128"])
    assert again[0]["resumed_from"] == 2 and again[-1]["step"] == 6
    assert _latest(tmp_path, "crop")["step"] == 6
    dplr = ["model.kernel=dplr", "training.max_steps=4"]
    assert _run(tmp_path, shards, "backend", [*dplr, "training.max_steps=2", "model.cauchy_backend=naive"])[-1]["step"] == 2
    again = _run(tmp_path, shards, "backend", [*dplr, "model.cauchy_backend=chunked"])
    assert again[0]["resumed_from"] == 2 and again[-1]["step"] == 4
    with pytest.raises(JobConfigError, match=r"model\.l_max: checkpoint 256, job 128"):
        _run(tmp_path, shards, "backend", [*dplr, "data.crop=128"])


def test_a_changed_d_model_is_refused_naming_the_key(tmp_path, shards):
    """Before Ray (prepare reads the checkpoint's job.json), and on the worker too (rank 0 compares the
    checkpoint it chose), for a config that reached train_rank without the driver's check."""
    _run(tmp_path, shards, "width", ["training.max_steps=2"])
    job, where = _job(tmp_path, shards, "width", ["model.d_model=8"])
    with pytest.raises(JobConfigError, match=r"model\.d_model: checkpoint 16, job 8"):
        run_local(job, where)
    config = prepare(_job(tmp_path, shards, "width")[0], where)
    wider = dataclasses.replace(config, job=dataclasses.replace(config.job, model=job.model))
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"), report=lambda m, d: None)
    with pytest.raises(CheckpointMismatchError, match=r"model\.d_model: checkpoint 16, job 8"):
        train_rank(wider, runtime)
