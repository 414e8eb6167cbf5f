"""Typed schema of a training job. Validation happens here, on the driver, before any Ray
resource is requested, so a typo costs a second instead of a cluster allocation. A JobConfig is
frozen: what the driver validated (and made absolute, cluster.driver.prepare) is what every worker
trains; a changed job is a new object (`dataclasses.replace`)."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from sashimi.augment import AugmentConfig
from sashimi.config import DiffWaveConfig, SaShiMiConfig, UNetConfig
from sashimi.digit_classifier import DigitClassifierConfig

from .logs import log


class JobConfigError(ValueError):
    """A job spec is invalid; the message names the file and the dotted key."""


@dataclass(frozen=True)
class DataConfig:
    shards: str = "data/shards"  # data_prep output dir: manifest.json + <split>/shard-*.tar
    train_split: str = "train"
    val_split: str = "val"
    quantization: Literal["mu-law", "linear", "none"] = "mu-law"  # "none": tokens are the values (pixels)
    crop: Optional[int] = 16000  # samples per training example; null = whole (equal-length) examples
    # threads per worker reading the clips of the next steps ahead (0 = read in the training thread); the
    # order of the clips is global, a function of (seed, step): cluster/train/order.py
    loader_workers: int = 2
    demo_minutes: Optional[float] = None  # if set and the shards are missing, build the demo corpus there
    on_bad_sample: Literal["skip", "stop"] = "skip"  # truncated shard / undecodable sample: log + skip, or fail
    # the digit classifier (task classify, model.arch) only: time shift, gain and noise on every training clip
    # (sashimi.augment.AugmentConfig; {} = its defaults), drawn from the example's own seed (exact resume)
    augment: Optional[AugmentConfig] = None


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 4e-3
    weight_decay: float = 0.0
    ssm_lr: float = 1e-3  # A, B, dt of the SSM, never weight-decayed


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["plateau", "cosine", "constant"] = "plateau"
    warmup_steps: int = 0
    factor: float = 0.2  # plateau: multiply the lr by this when val NLL stalls
    patience: int = 2  # plateau: evaluations without improvement before reducing
    threshold: float = 1e-4  # plateau: relative improvement that counts
    min_lr_scale: float = 0.0  # floor for the schedule's multiplier (cosine end / plateau floor)


@dataclass(frozen=True)
class TrainingConfig:
    max_steps: int = 1000  # optimiser steps
    # Clips per optimiser step over all workers. Set, it fixes what a step trains on whatever the number of
    # workers (each takes its share, in micro-batches of at most batch_per_worker: the rest is gradient
    # accumulation), as elastic jobs need. Unset: batch_per_worker x grad_accum x workers.
    global_batch: Optional[int] = None
    batch_per_worker: int = 1  # with global_batch: the most clips one worker holds at once
    grad_accum: int = 1  # micro-batches per optimiser step (without global_batch)
    clip_norm: Optional[float] = 1.0  # null = no clipping
    # bf16: autocast; fp16: autocast + GradScaler (cluster/train/precision.py). Both only on GPU (fp32 on a CPU).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    tf32: bool = True  # TF32 fp32 matmuls on CUDA (Ampere and newer); false: full fp32 products
    compile: bool = False  # run the training forward under torch.compile (measured: docs/benchmarks.md)
    max_nonfinite_steps: int = 10  # NaN/Inf loss or gradients: skip the step; stop after this many in a row
    label_smoothing: float = 0.0  # task classify: cross-entropy against (1 - e) one-hot + e uniform (training only)


@dataclass(frozen=True)
class ScalingConfig:
    # N, or [min, max]: an elastic run (Ray's ScalingConfig takes the same pair) starts once `min` workers
    # fit, asks for `max`, and restarts at the available size from the latest checkpoint when it changes
    num_workers: object = 1
    resize_check_s: float = 60.0  # how often Ray checks whether an elastic run could change its size
    preemption_check_every: int = 1  # steps between reclaim-notice checks (a barrier of every worker); 0 = off
    use_gpu: bool = False
    resources_per_worker: dict = field(default_factory=lambda: {"CPU": 1})
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    torch_threads: Optional[int] = None  # null = the CPUs reserved per worker

    @property
    def min_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[0]

    @property
    def max_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[1]

    @property
    def elastic(self) -> bool:
        return self.min_workers < self.max_workers


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # optimiser steps between checkpoints (and data-stream segments)
    keep: int = 3
    storage: str = "runs"  # local dir (made absolute) or a URI Ray understands
    # A checkpoint directory to start this run from when its own run dir has nothing to resume (e.g. an
    # older checkpoint of another run: branch off it under a new `name`). Ignored once this run has one.
    init_from: Optional[str] = None


@dataclass(frozen=True)
class FailureConfig:
    max_failures: int = 3  # worker-group restarts from the last checkpoint; -1 = forever
    max_preemptions: int = -1  # restarts after a node reclaim (spot/preemptible), counted apart; -1 = forever


@dataclass(frozen=True)
class Sc09MetricsConfig:
    """eval.sc09_metrics: sample-quality metrics of generated clips at each evaluation (FID, IS, mIS, AM,
    sashimi.sample_metrics) with a digit classifier trained by sashimi-train (task: classify, model.arch)."""

    classifier: str  # the classifier's checkpoint (local path or URI)
    samples: int = 256  # clips generated and scored at each evaluation (rank 0)


@dataclass(frozen=True)
class DiffusionEvalConfig:
    """eval.diffusion (task diffusion only): what an evaluation of a DiffWave+SaShiMi run computes."""

    # every val clip is scored at this many diffusion steps, evenly spread over 0..T-1 (t_k = (2k+1)T/2K):
    # val/loss is their mean, val/loss_tNNN each one's (the loss by noise level)
    noise_levels: int = 10
    clips: int = 4  # clips of eval.generate_samples samples generated and logged (also the sampler's batch)
    steps: Optional[int] = 20  # their sampling schedule: strided over T (cheap); null = all T (ancestral DDPM)
    metrics_steps: Optional[int] = None  # the eval.sc09_metrics clips' schedule; null = all T


@dataclass(frozen=True)
class EvalConfig:
    every: int = 500
    val_batches: int = 8
    val_batch_size: int = 1
    generate_samples: int = 16000  # length of the audio clip(s) logged each evaluation; 0 = none
    sc09_metrics: Optional[Sc09MetricsConfig] = None
    diffusion: DiffusionEvalConfig = field(default_factory=DiffusionEvalConfig)


@dataclass(frozen=True)
class LoggingConfig:
    every: int = 10


@dataclass(frozen=True)
class JobConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    # Both tasks' models are configured by SaShiMiConfig (the classifier ignores pool/expand/unet); parsed
    # once, in job_from_dict, with l_max defaulting to data.crop (SaShiMiConfig.weight_keys says which of
    # its keys a resumed checkpoint must agree on).
    model: object = field(default_factory=SaShiMiConfig)  # the task's model config (model_config_class)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0
    # "generate": SaShiMi next-token training; "classify": the S4 sequence classifier
    # (sashimi.classifier) on labelled samples, scored on the test split at the end. Both run through
    # sashimi-train; what differs is a plug-in in cluster/tasks/ (registered there by this name).
    # "diffusion": the non-causal SaShiMi as DiffWave's noise predictor (sashimi.diffwave), its `model:`
    # section a DiffWaveConfig. "classify" with `model.arch` (conv | s4_mel | s4_wave): the digit classifier
    # of the SC09 metrics on 1 s waveforms (sashimi.digit_classifier, a DigitClassifierConfig).
    # (diffusion trains on the raw waveform: data.quantization is not used.)
    task: Literal["generate", "classify", "diffusion"] = "generate"

    def global_batch(self, world: int) -> int:
        """Clips per optimiser step at world size `world`."""
        t = self.training
        return t.global_batch or t.batch_per_worker * t.grad_accum * world

    def due(self, step: int, every: int) -> bool:
        """Whether something done every `every` steps (logging, evaluation, a checkpoint) happens after
        optimiser step `step`: at its multiples, and at the last step."""
        return step % every == 0 or step == self.training.max_steps

    def to_dict(self) -> dict:
        """Plain data (what checkpoints store as JSON and Ray hands to the workers)."""
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        nw = self.scaling.num_workers
        out["scaling"]["num_workers"] = nw if isinstance(nw, int) else list(nw)
        return out


def task_name(job: JobConfig | dict) -> str:
    """A job's task; a stored job (a dict) written before `task` existed is a generate job."""
    return job.task if isinstance(job, JobConfig) else (job.get("task") or "generate")


# Range checks: dotted key -> (predicate, description).
_CHECKS = {
    "training.max_steps": (lambda v: v >= 1, ">= 1"),
    "training.batch_per_worker": (lambda v: v >= 1, ">= 1"),
    "training.grad_accum": (lambda v: v >= 1, ">= 1"),
    "training.clip_norm": (lambda v: v is None or v > 0, "> 0 or null"),
    "training.max_nonfinite_steps": (lambda v: v >= 1, ">= 1"),
    "training.label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "data.crop": (lambda v: v is None or v >= 2, ">= 2 or null"),
    "data.loader_workers": (lambda v: v >= 0, ">= 0"),
    "data.demo_minutes": (lambda v: v is None or v > 0, "> 0 or null"),
    "optim.lr": (lambda v: v > 0, "> 0"),
    "optim.ssm_lr": (lambda v: v > 0, "> 0"),
    "optim.weight_decay": (lambda v: v >= 0, ">= 0"),
    "schedule.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "schedule.factor": (lambda v: 0 < v < 1, "in (0, 1)"),
    "schedule.patience": (lambda v: v >= 0, ">= 0"),
    "schedule.min_lr_scale": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "training.global_batch": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "scaling.resize_check_s": (lambda v: v > 0, "> 0"),
    "scaling.preemption_check_every": (lambda v: v >= 0, ">= 0"),
    "failure.max_preemptions": (lambda v: v >= -1, ">= -1"),
    "scaling.torch_threads": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "checkpoint.every": (lambda v: v >= 1, ">= 1"),
    "checkpoint.keep": (lambda v: v >= 1, ">= 1"),
    "failure.max_failures": (lambda v: v >= -1, ">= -1"),
    "eval.every": (lambda v: v >= 1, ">= 1"),
    "eval.val_batches": (lambda v: v >= 0, ">= 0"),
    "eval.val_batch_size": (lambda v: v >= 1, ">= 1"),
    "eval.generate_samples": (lambda v: v >= 0, ">= 0"),
    "eval.sc09_metrics.samples": (lambda v: v >= 10, ">= 10 (at least as many clips as digit classes)"),
    "eval.diffusion.noise_levels": (lambda v: v >= 1, ">= 1"),
    "eval.diffusion.clips": (lambda v: v >= 1, ">= 1"),
    "eval.diffusion.steps": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "eval.diffusion.metrics_steps": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "logging.every": (lambda v: v >= 1, ">= 1"),
    "name": (lambda v: bool(v) and "/" not in v and not v.startswith("."), "a non-empty name without '/'"),
}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str, where: str):
    """Check `value` against annotation `tp`; ints are accepted for floats. Raises JobConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise JobConfigError(f"{where}: {key}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, where)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string: accept numeric text
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is dict:
        ok = isinstance(value, dict)
    elif tp is object:  # checked by job_from_dict (scaling.num_workers: N or [min, max])
        ok = True
    else:  # pragma: no cover - schema uses only the types above
        raise TypeError(f"unsupported annotation {tp}")
    if not ok:
        raise JobConfigError(f"{where}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, raw: Any, prefix: str, where: str):
    if not isinstance(raw, dict):
        raise JobConfigError(f"{where}: {prefix or 'top level'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        keys = ", ".join(f"{prefix}.{k}" if prefix else str(k) for k in unknown)
        raise JobConfigError(f"{where}: unknown key(s) {keys}; allowed here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise JobConfigError(f"{where}: missing required key {key}")
            continue
        kwargs[name] = _coerce(raw[name], hints[name], key, where)
        if key in _CHECKS and not _CHECKS[key][0](kwargs[name]):
            raise JobConfigError(f"{where}: {key}: must be {_CHECKS[key][1]}, got {kwargs[name]!r}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a section's own checks (sashimi's configs validate themselves)
        raise JobConfigError(f"{where}: {prefix or 'top level'}: {e}") from None


def job_from_dict(raw: Any, where: str = "<job>") -> JobConfig:
    """Validate a parsed YAML mapping into a JobConfig; `where` (the file) is named in every error."""
    if not isinstance(raw, dict):
        raise JobConfigError(f"{where}: top level: expected a mapping, got {type(raw).__name__}")
    raw = _without_retired_keys(raw, where)
    job = _build(JobConfig, {k: v for k, v in raw.items() if k != "model"}, "", where)
    job = dataclasses.replace(job, model=_model_config(raw.get("model", {}), job.data.crop, where, job.task),
                              scaling=dataclasses.replace(job.scaling, num_workers=_num_workers(job, where)))
    _check_global_batch(job, where)
    _check_task_options(job, where)
    if job.task == "diffusion":
        _check_diffusion(job, where)
    if job.scaling.use_gpu is False and job.scaling.resources_per_worker.get("GPU"):
        raise JobConfigError(f"{where}: scaling.resources_per_worker: asks for GPU but scaling.use_gpu is false")
    for k, v in job.scaling.resources_per_worker.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise JobConfigError(f"{where}: scaling.resources_per_worker.{k}: expected a number >= 0, got {v!r}")
    return job


# Keys older jobs (and the jobs stored in older checkpoints) may hold that no longer mean anything: dropped
# with one warning instead of refusing the job.
RETIRED_KEYS = {("data", "shuffle_buffer"): "the sample order is global now (cluster/train/order.py)"}


def _without_retired_keys(raw: dict, where: str) -> dict:
    out = dict(raw)
    for (section, key), why in RETIRED_KEYS.items():
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section] = {k: v for k, v in out[section].items() if k != key}
            log.warning(f"{where}: {section}.{key} is ignored: {why}")
    return out


def _num_workers(job: JobConfig, where: str) -> int | tuple[int, int]:
    """scaling.num_workers: N >= 1, or [min, max] with 1 <= min <= max ([n, n] is N)."""
    v = job.scaling.num_workers
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise JobConfigError(f"{where}: scaling.num_workers: must be >= 1, got {v}")
        return v
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        lo, hi = v
        if not 1 <= lo <= hi:
            raise JobConfigError(f"{where}: scaling.num_workers: [min, max] needs 1 <= min <= max, got [{lo}, {hi}]")
        return lo if lo == hi else (lo, hi)
    raise JobConfigError(f"{where}: scaling.num_workers: expected a number of workers or [min, max], got {v!r}")


def _check_global_batch(job: JobConfig, where: str) -> None:
    """An elastic job must fix its global batch (else a step's clips would depend on the world size), and
    the global batch must give every worker at least one clip at the largest size."""
    s, g = job.scaling, job.training.global_batch
    if s.elastic and g is None:
        raise JobConfigError(f"{where}: scaling.num_workers [{s.min_workers}, {s.max_workers}] lets the number of "
                             f"workers change: set training.global_batch (clips per step over all workers) so "
                             f"that a step trains on the same clips at any size")
    if g is not None and g < s.max_workers:
        raise JobConfigError(f"{where}: training.global_batch {g} cannot be split over scaling.num_workers "
                             f"{s.num_workers if isinstance(s.num_workers, int) else list(s.num_workers)}: "
                             f"at {s.max_workers} workers some would get no clip")


def _check_task_options(job: JobConfig, where: str) -> None:
    """Options that only some tasks use are refused elsewhere, naming the key (not silently ignored)."""
    if job.data.augment is not None and not isinstance(job.model, DigitClassifierConfig):
        raise JobConfigError(f"{where}: data.augment: waveform augmentation is for the digit classifier only "
                             f"(task: classify with model.arch), not task {job.task!r} with this model section")
    if job.training.label_smoothing and job.task != "classify":
        raise JobConfigError(f"{where}: training.label_smoothing: only task classify trains on labels "
                             f"(this job is task {job.task!r})")
    if job.eval.sc09_metrics is not None and (job.task == "classify" or
                                              (job.task == "generate" and job.data.quantization == "none")):
        raise JobConfigError(f"{where}: eval.sc09_metrics: scores generated audio clips; task {job.task!r} with "
                             f"data.quantization {job.data.quantization!r} generates none")


def _check_diffusion(job: JobConfig, where: str) -> None:
    """The diffusion backbone runs on whole windows of a multiple of its total pooling (it pads nothing:
    padding would reach the real samples through the anti-causal kernels), and scores val at most T levels."""
    pool, T = job.model.total_pool, job.model.diffusion_steps
    crop = job.data.crop
    if crop is None or crop % pool:
        raise JobConfigError(f"{where}: data.crop: task diffusion trains on windows of a fixed length divisible by "
                             f"the total pooling {pool} (the product of model.pool {list(job.model.pool)}), got "
                             f"{crop!r}; e.g. data.crop={max(pool, (crop or 16000) // pool * pool)}")
    n = job.eval.generate_samples
    if n % pool:
        raise JobConfigError(f"{where}: eval.generate_samples: the generated clips' length must be divisible by the "
                             f"total pooling {pool} (product of model.pool), got {n}; "
                             f"e.g. {max(pool, n // pool * pool)}")
    if job.eval.diffusion.noise_levels > T:
        raise JobConfigError(f"{where}: eval.diffusion.noise_levels: at most model.diffusion_steps ({T}), got "
                             f"{job.eval.diffusion.noise_levels}")


def model_config_class(task: str, raw: dict) -> type:
    """The config class of a job's `model:` section: what the task's model is built from."""
    if task == "diffusion":
        return DiffWaveConfig
    if task == "classify" and "arch" in raw:
        return DigitClassifierConfig
    return SaShiMiConfig


def _model_config(raw: Any, crop: int | None, where: str, task: str = "generate"):
    """The `model:` section as the task's model config (sashimi owns its keys and names a bad one itself)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobConfigError(f"{where}: model: expected a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    cls = model_config_class(task, raw)
    if issubclass(cls, UNetConfig) and "l_max" not in raw and crop:
        # The DPLR kernel is defined at l_max; training at exactly that length is cheapest and
        # other lengths stay exact. Written into the job, so checkpoints record it.
        raw["l_max"] = int(crop)
    try:
        return cls.from_dict(raw)
    except (ValueError, TypeError) as e:
        msg = str(e) if "model" in str(e) else f"model: {e}"
        raise JobConfigError(f"{where}: {msg}") from e
