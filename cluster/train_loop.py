"""The function every Ray Train worker runs: DDP training on its own shard stream, periodic
validation and checkpoints, TensorBoard on rank 0. What depends on the job's `task` (model, batch
contents, loss, validation metrics; a classifier's final test accuracy) lives in cluster/tasks.py.

Collective discipline (a mismatch deadlocks DDP): every rank runs the same number of steps
(fixed-size segments), calls `ray.train.report` at the same steps (checkpoint steps), and joins the
same two collectives at evaluation steps (broadcast of the val metrics) and checkpoint steps (gather of
RNG states). Validation, generation and a classifier's final test evaluation run on rank 0 only, on
the unwrapped module.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FAULT_ENV = "SASHIMI_FAULT_AT_STEP"  # test-only: raise on one rank at this step, once
FAULT_MARKER_ENV = "SASHIMI_FAULT_MARKER"  # file created when the fault fires; present = already fired
FAULT_RANK_ENV = "SASHIMI_FAULT_RANK"
FAULT_JOB_ENV = "SASHIMI_FAULT_JOB"  # optional: only the job with this name
# Test-only fault plan, JSON keyed by job name: {"JOB": {"dir": MARKER_DIR, "kill": [[rank, step], ...],
# "tear": [step, ...], "nan": [[rank, step], ...]}}. kill: SIGKILL the worker process after that optimiser
# step; tear: after checkpoint `step` is persisted, truncate its state.pt and SIGKILL rank 0 (a crash while
# writing). Each kill/tear fires once (a marker file in "dir"); nan poisons the loss on every attempt;
# "sleep": seconds added to every step (keeps a tiny run alive long enough to remove a node under it).
TEST_FAULTS_ENV = "SASHIMI_TEST_FAULTS"


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps with NaN/Inf loss or gradients, or non-finite weights."""


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _maybe_inject_fault(step: int, rank: int, job_name: str) -> None:
    at = os.environ.get(FAULT_ENV)
    if not at or step != int(at) or rank != int(os.environ.get(FAULT_RANK_ENV, "0")):
        return
    if os.environ.get(FAULT_JOB_ENV, job_name) != job_name:
        return
    marker = Path(os.environ.get(FAULT_MARKER_ENV, "/nonexistent-dir/sashimi-fault"))
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # first attempt only
    except FileExistsError:
        return
    os.close(fd)
    raise RuntimeError(f"injected fault at step {step} on rank {rank} ({FAULT_ENV})")


def _test_faults(job_name: str) -> dict:
    raw = os.environ.get(TEST_FAULTS_ENV)
    return json.loads(raw).get(job_name, {}) if raw else {}


def _fire_once(plan: dict, tag: str) -> bool:
    """True the first time `tag` is seen for this plan (atomic marker file), False afterwards."""
    marker = Path(plan["dir"]) / tag
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _maybe_kill(plan: dict, step: int, rank: int) -> None:
    if [rank, step] in plan.get("kill", []) and _fire_once(plan, f"kill-r{rank}-s{step}"):
        _say(f"test fault: SIGKILL rank {rank} after step {step}")
        os.kill(os.getpid(), signal.SIGKILL)


def _maybe_tear(plan: dict, step: int, rank: int, persisted: Path) -> None:
    if rank == 0 and step in plan.get("tear", []) and _fire_once(plan, f"tear-s{step}"):
        f = persisted / "state.pt"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        _say(f"test fault: truncated {f}; SIGKILL rank 0")
        os.kill(os.getpid(), signal.SIGKILL)


def _say(msg: str) -> None:
    """Progress line to the worker's stdout (Ray forwards it to the driver / job logs). Not print():
    Ray Train V2 patches print to tee into its logger as well, which shows every line twice."""
    sys.stdout.write(f"[sashimi] {msg}\n")
    sys.stdout.flush()


def _memory_metrics(device) -> dict:
    import resource

    out = {"memory/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    try:  # current RSS from /proc (Linux); no psutil dependency
        with open("/proc/self/statm") as f:
            out["memory/rss_mb"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    if device.type == "cuda":
        out["memory/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def nonfinite_step(loss_sum: float, grad_norm: float, device, world: int) -> bool:
    """Whether this step must be skipped: any rank saw a NaN/Inf loss or gradient norm. All-reduced
    (MAX) across ranks when world > 1, so every rank takes the same decision (no divergence, no hang)."""
    bad = not (math.isfinite(loss_sum) and math.isfinite(grad_norm))
    if world > 1:
        flag = torch.tensor([1.0 if bad else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = bool(flag.item() > 0)
    return bad


def train_fn(cfg: dict) -> None:
    """Ray Train worker entry point. cfg: {"job": JobConfig dict, "shards": {"train": [...], "val": [...],
    and for classify jobs "test": [...]}, "test_split": str (classify), "sample_rate": int | None}."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from sashimi.optim import make_optimizer

    from . import checkpoint as ckpt_io
    from .config import job_from_dict
    from .data import mix_seed, train_loader, val_batches
    from .schedule import LRSchedule
    from .tasks import finish_classify, task_of, tb_tag

    job = job_from_dict(cfg["job"], "<job from driver>")
    task = task_of(job)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = job.scaling.torch_threads or max(1, int(job.scaling.resources_per_worker.get("CPU", 1)))
    torch.set_num_threads(threads)
    device = ray.train.torch.get_device()
    use_bf16 = job.training.precision == "bf16" and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    if rank == 0 and job.training.precision == "bf16" and not use_bf16:
        _say("precision bf16 requested without a GPU: training in fp32")

    _seed_all(job.seed)  # same init on every rank (DDP also broadcasts rank 0's parameters)
    raw_model = task.build_model(job.model)
    model = ray.train.torch.prepare_model(raw_model)  # moves to device; DDP when world > 1
    optimizer = make_optimizer(raw_model, lr=job.optim.lr, weight_decay=job.optim.weight_decay,
                               ssm_lr=job.optim.ssm_lr)
    s = job.schedule
    sched = LRSchedule(optimizer, s.kind, job.training.max_steps, s.warmup_steps, s.factor, s.patience,
                       s.threshold, s.min_lr_scale)

    from .jobs import is_uri

    step = 0
    restored_rng = None
    resumed_from = -1
    nonfinite_total = 0
    ckpt_suffix = ""  # set after a fallback resume, so new checkpoints never reuse a torn one's name
    skipped_invalid = 0  # invalid checkpoints passed over when resuming
    run_dir = None if is_uri(job.checkpoint.storage) else Path(job.checkpoint.storage) / job.name
    checkpoint = ray.train.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(None)) as d:
        # Ray hands out the newest checkpoint it *registered*: a crash while it was written leaves it torn
        # (fall back to the newest valid older one), and a worker SIGKILLed right after persisting one can
        # die before Ray registers it (resume from the newer complete one on storage). See resolve_resume.
        state, used, problems = ckpt_io.resolve_resume(
            d, run_dir, log=_say if rank == 0 else (lambda m: None))  # RNG states stay CPU tensors
    if state is None and job.checkpoint.init_from:  # nothing of our own yet: branch off the given checkpoint
        used = Path(job.checkpoint.init_from)
        state = ckpt_io.validate_checkpoint(used)
        if rank == 0:
            _say(f"starting from checkpoint.init_from {used} (step {state['step']})")
    if state is not None:
        ckpt_io.check_compatible(ckpt_io.job_of(state), job.to_dict(), used)
        if problems:
            ckpt_suffix = f"r{int(time.time())}"
            skipped_invalid = len(problems)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = resumed_from = state["step"]
        nonfinite_total = int(state.get("nonfinite_steps", 0))
        per_rank = state["rng"].get("per_rank")
        if per_rank is not None and len(per_rank) == world:
            restored_rng = per_rank[rank]
        if rank == 0:
            _say(f"resumed from checkpoint at step {step}" + (f" ({used.name}, after skipping "
                 f"{len(problems)} invalid checkpoint(s))" if problems else ""))
    if restored_rng is not None:
        ckpt_io.restore_rng(restored_rng)
    else:  # fresh start, or a different world size: RNG is a pure function of (seed, rank, step)
        _seed_all(mix_seed(job.seed, rank, step, 17))

    writer = None
    if rank == 0:
        from .tboard import Board

        writer = Board(Path(job.checkpoint.storage) / job.name / "tensorboard", purge_step=step,
                       sample_rate=cfg.get("sample_rate"), quantization=job.data.quantization)
        if step == 0:
            writer.text("job", "```\n" + __import__("yaml").safe_dump(job.to_dict(), sort_keys=False) + "\n```", 0)

    val = None
    bs, accum, every = job.training.batch_per_worker, job.training.grad_accum, job.checkpoint.every
    params = [p for p in raw_model.parameters() if p.requires_grad]
    clip = job.training.clip_norm if job.training.clip_norm is not None else float("inf")
    t_first = None
    faults = _test_faults(job.name)
    nan_steps = {s for r, s in faults.get("nan", []) if r == rank}
    nonfinite_run = 0  # consecutive skipped steps (identical on every rank: the skip flag is all-reduced)
    window = {"time": 0.0, "data": 0.0, "steps": 0, "loss": 0.0}
    totals = {"time": 0.0, "data": 0.0, "steps": 0}  # this attempt, first step excluded (warm-up)
    model.train()

    while step < job.training.max_steps:
        seg_end = min((step // every + 1) * every, job.training.max_steps)
        loader = train_loader(cfg["shards"]["train"], seed=job.seed, rank=rank, start_step=step,
                              n_batches=(seg_end - step) * accum, batch_size=bs, crop=job.data.crop,
                              quantization=job.data.quantization, shuffle_buffer=job.data.shuffle_buffer,
                              loader_workers=job.data.loader_workers, on_bad_sample=job.data.on_bad_sample,
                              n_labels=task.n_labels)
        batches = iter(loader)
        while step < seg_end:
            t0 = time.perf_counter()
            sched.apply(step)
            data_wait, loss_sum = 0.0, 0.0
            for micro in range(accum):
                td = time.perf_counter()
                batch = tuple(t.to(device, non_blocking=True) for t in next(batches))
                data_wait += time.perf_counter() - td
                sync = micro == accum - 1 or not hasattr(model, "no_sync")
                with (contextlib.nullcontext() if sync else model.no_sync()):
                    loss = task.loss(model, batch, autocast)
                    if step + 1 in nan_steps:
                        loss = loss * float("nan")  # test hook: a poisoned batch
                    (loss / accum).backward()
                loss_sum += float(loss.detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            # NaN/Inf loss or gradients: skip the optimiser step on *every* rank (a rank that stepped alone
            # would diverge from the others), zero the gradients, count it, stop after too many in a row.
            skip = nonfinite_step(loss_sum, grad_norm, device, world)
            if skip:
                optimizer.zero_grad(set_to_none=True)
                nonfinite_total += 1
                nonfinite_run += 1
                if rank == 0:
                    _say(f"step {step + 1}: non-finite loss {loss_sum / accum} / grad norm {grad_norm}: "
                         f"optimiser step skipped ({nonfinite_run} in a row, {nonfinite_total} in total)")
                if nonfinite_run >= job.training.max_nonfinite_steps:
                    raise NonFiniteTrainingError(
                        f"job {job.name!r}: {nonfinite_run} consecutive steps (up to step {step + 1}) had "
                        f"non-finite loss or gradients (training.max_nonfinite_steps="
                        f"{job.training.max_nonfinite_steps}); stopping. Lower optim.lr, set training.clip_norm, "
                        f"or check the data. The last good checkpoint is kept in {run_dir or job.checkpoint.storage}")
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                nonfinite_run = 0
            _maybe_inject_fault(step + 1, rank, job.name)
            _maybe_kill(faults, step + 1, rank)
            if faults.get("sleep"):
                time.sleep(float(faults["sleep"]))
            step += 1
            dt = time.perf_counter() - t0
            if t_first is not None:
                totals["time"] += dt
                totals["data"] += data_wait
                totals["steps"] += 1
            else:
                t_first = time.time()
                if rank == 0:
                    _say(f"first step done at unix time {t_first:.3f}")
            window["time"] += dt
            window["data"] += data_wait
            window["steps"] += 1
            window["loss"] += loss_sum / accum if not skip else 0.0
            window["skipped"] = window.get("skipped", 0) + int(skip)

            if rank == 0 and (step % job.logging.every == 0 or step == job.training.max_steps):
                n = window["steps"]
                n_ok = n - window.get("skipped", 0)  # skipped (non-finite) steps do not enter the mean loss
                sps = n * bs * accum * world / max(window["time"], 1e-9)
                scalars = {task.loss_tag: window["loss"] / n_ok if n_ok else float("nan"), "train/lr": optimizer.param_groups[0]["lr"],
                           "train/grad_norm": grad_norm, "train/nonfinite_steps": nonfinite_total,
                           "perf/samples_per_s": sps,
                           "perf/step_time_s": window["time"] / n, "perf/data_wait_s": window["data"] / n,
                           **_memory_metrics(device)}
                writer.scalars(scalars, step)
                _say(f"step {step}/{job.training.max_steps} loss {scalars[task.loss_tag]:.4f} {task.loss_unit} "
                      f"lr {scalars['train/lr']:.2e} gnorm {grad_norm:.3f} {sps:.1f} samples/s "
                      f"data wait {1000 * window['data'] / n:.1f} ms/step")
                window = {"time": 0.0, "data": 0.0, "steps": 0, "loss": 0.0}

            metrics = {"step": step, "resumed_from": resumed_from, "first_step_unix": t_first,
                       "nonfinite_steps": nonfinite_total, "resume_skipped_invalid": skipped_invalid}
            if totals["steps"]:
                metrics["perf_samples_per_s"] = totals["steps"] * bs * accum * world / totals["time"]
                metrics["perf_step_time_s"] = totals["time"] / totals["steps"]
                metrics["perf_data_wait_s_per_step"] = totals["data"] / totals["steps"]
            if job.eval.val_batches and (step % job.eval.every == 0 or step == job.training.max_steps):
                val_vec = torch.zeros(len(task.val_keys), dtype=torch.float64, device=device)
                if rank == 0:
                    if val is None:
                        val = val_batches(cfg["shards"]["val"], n_batches=job.eval.val_batches,
                                          batch_size=job.eval.val_batch_size, crop=job.data.crop,
                                          quantization=job.data.quantization, seed=job.seed,
                                          on_bad_sample=job.data.on_bad_sample, n_labels=task.n_labels)
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        res = task.evaluate(raw_model, val, device, autocast)
                        val_vec.copy_(torch.tensor([res[k] for k in task.val_keys], dtype=torch.float64))
                        writer.scalars({tb_tag(k): res[k] for k in task.val_keys}, step)
                        _say(f"step {step} {task.val_line(res)}")
                        if job.eval.generate_samples and task.name == "generate":
                            writer.generated(raw_model, job.eval.generate_samples, step, seed=mix_seed(job.seed, step))
                if world > 1:
                    torch.distributed.broadcast(val_vec, src=0)
                metrics.update({k: float(v) for k, v in zip(task.val_keys, val_vec.tolist())})
                if sched.observe(metrics[task.plateau_key]) and rank == 0:
                    _say(f"{task.plateau_key} plateaued: lr scale now {sched.plateau_scale:g}")

            if step % every == 0 or step == job.training.max_steps:
                # DDP keeps the weights identical on every rank, so all ranks reach the same verdict here
                bad = ckpt_io.nonfinite_entries(raw_model.state_dict())
                if bad:
                    raise ckpt_io.NonFiniteCheckpointError(
                        f"job {job.name!r}: weights are non-finite at step {step} ({', '.join(bad[:5])}); refusing "
                        f"to save a checkpoint. The last good one is kept in {run_dir or job.checkpoint.storage}")
                rng = ckpt_io.capture_rng()
                per_rank = [None] * world
                if world > 1:
                    torch.distributed.all_gather_object(per_rank, rng)
                else:
                    per_rank = [rng]
                if rank == 0:
                    state = ckpt_io.make_state(
                        model_state=raw_model.state_dict(), optimizer_state=optimizer.state_dict(),
                        scheduler_state=sched.state_dict(), step=step, data_seed=job.seed, world_size=world,
                        job=job.to_dict(), metrics={k: v for k, v in metrics.items() if k in task.val_keys})
                    state["rng"]["per_rank"] = per_rank
                    state["nonfinite_steps"] = nonfinite_total
                    name = ckpt_io.checkpoint_dir_name(step, ckpt_suffix)
                    with tempfile.TemporaryDirectory() as tmp:
                        ckpt_io.save_checkpoint_dir(tmp, state)
                        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp),
                                         checkpoint_dir_name=name)
                    writer.flush()
                    if run_dir is not None:
                        _maybe_tear(faults, step, rank, run_dir / name)
                else:
                    ray.train.report(metrics, checkpoint=None)
        del batches, loader
    if task.name == "classify" and rank == 0:
        # After the last step (also when a finished run is re-run): score the whole test split. No
        # collective follows, so the other ranks simply finish; the driver reads test_result.json.
        finish_classify(job, raw_model, cfg["shards"]["test"], cfg["test_split"], step, device, autocast, writer,
                        run_dir, _say)
    if writer is not None:
        writer.close()
