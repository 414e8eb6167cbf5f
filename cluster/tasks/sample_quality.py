"""The training-time half of the SC09 metrics (`eval.sc09_metrics: {classifier, samples}`), for any task
that generates clips: at each evaluation rank 0 hands `SampleQuality.generate_and_log` its way of making
`samples` clips; they are timed, then handed to `SampleQuality.log`, which
scores them with cluster.sc09.score_clips (the function sashimi-eval --metrics sc09 calls) and logs
FID / IS / mIS / AM under samples/ in TensorBoard. The judge (classifier and reference features) is
loaded at the first evaluation and kept for the rest of the run."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..config import Sc09MetricsConfig
from ..logs import log
from ..sc09 import TRAINING_METRICS, Judge, load_judge, score_clips
from .base import EvalContext


class SampleQuality:
    def __init__(self, cfg: Sc09MetricsConfig):
        self.cfg = cfg
        self.judge: Judge | None = None

    @classmethod
    def of(cls, job) -> "SampleQuality | None":
        """The job's eval.sc09_metrics as a SampleQuality, None when the job names no classifier."""
        return cls(job.eval.sc09_metrics) if job.eval.sc09_metrics is not None else None

    def generate_and_log(self, ctx: EvalContext, generate: Callable[[int], object], sample_rate: int) -> dict:
        """`generate(n)` the configured number of clips (timed as perf/sc09_generate_s), then `log` them."""
        t0 = time.perf_counter()
        clips = generate(self.cfg.samples)
        ctx.board.scalars({"perf/sc09_generate_s": time.perf_counter() - t0}, ctx.step)
        return self.log(ctx, clips, sample_rate)

    def log(self, ctx: EvalContext, clips: np.ndarray, sample_rate: int) -> dict:
        """Score (N, L) generated clips at `sample_rate` and log samples/<metric> at ctx.step, plus
        perf/sample_metrics_s (the classifier and the metrics; loading the judge the first time included).
        Returns the scores."""
        t0 = time.perf_counter()
        if self.judge is None:
            if ctx.load_checkpoint is None:
                raise ValueError("eval.sc09_metrics: this runtime hands the task no checkpoint loader")
            self.judge = load_judge(self.cfg.classifier, ctx.load_checkpoint, device=ctx.device)
        scores = score_clips(clips, sample_rate, self.judge, TRAINING_METRICS)
        ctx.board.scalars({**{f"samples/{k}": scores[k] for k in TRAINING_METRICS},
                           "perf/sample_metrics_s": time.perf_counter() - t0}, ctx.step)
        log.info(f"step {ctx.step} samples ({scores['clips']} clips): "
                 + " ".join(f"{k.upper() if k != 'mis' else 'mIS'} {scores[k]:.4g}" for k in TRAINING_METRICS))
        return scores
