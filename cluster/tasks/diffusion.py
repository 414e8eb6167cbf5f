"""task: diffusion. The non-causal SaShiMi as DiffWave's noise predictor (sashimi.diffwave, DiffWave+SaShiMi)
on the raw waveform: examples (x0, t, ε) with the noise drawn per example from the global order's seeded
RNG (cluster/tasks/examples.py: NoisedWaveExamples), so a step's loss is a function of its clips, the same
at any world size and after any restart; loss = the ε-prediction squared error summed over positions
(the trainer divides by global batch x crop: the MSE over every position, padding included, as the
reference trains).

Validation scores every val clip at `eval.diffusion.noise_levels` fixed diffusion steps spread evenly over
0..T-1 (with the clip's own ε), instead of at one random step: the loss varies by orders of magnitude
with t, so a random-t val loss is mostly the draw of t; the fixed grid makes val/loss comparable between
evaluations and gives the loss at each noise level (val/loss_tNNN) from the same forward passes. Sums of
(loss, count) per level merge across ranks by addition.

At each evaluation rank 0 generates `eval.diffusion.clips` clips with a short strided schedule
(`eval.diffusion.steps`; the full ancestral sampler takes T network evaluations) and logs them, one after
the other, as audio and a spectrogram; after training the driver writes a WAV from the newest checkpoint."""
from __future__ import annotations

import time

import torch

from sashimi import diffusion
from sashimi.diffwave import DiffWaveSaShiMi

from ..audio import spectrogram_image, write_wav
from ..seeds import mix_seed
from .base import DriverContext, EvalContext, Task
from .examples import NoisedWaveExamples
from .sample_quality import SampleQuality

PURPOSE_EVAL_CLIPS, PURPOSE_METRIC_CLIPS, PURPOSE_CLOSING_WAV = 201, 202, 203
GAP_SECONDS = 0.25  # silence between the clips logged one after the other


def level_steps(T: int, levels: int) -> list[int]:
    """The diffusion steps validation scores at: the centres of `levels` equal buckets of 0..T-1,
    t_k = (2k+1)·T // (2·levels), so step t_k falls in bucket k of sashimi.diffusion.loss_by_level."""
    return [(2 * k + 1) * T // (2 * levels) for k in range(levels)]


def sample_clips(model: torch.nn.Module, n: int, length: int, *, steps: int | None, seed: int, batch: int,
                 eta: float = 1.0, schedule: diffusion.Schedule | None = None, progress: bool = False) -> torch.Tensor:
    """`n` clips (n, length) float32 on the CPU from the reverse process (sashimi.diffusion.sample; the
    schedule: the model config's unless given): `steps` None = ancestral DDPM over all T, else the strided
    schedule with `eta`; `batch` clips per network evaluation; every draw from one generator seeded by
    `seed`. Clamped to [-1, 1], the range they are written in (DiffWave clamps its samples too)."""
    g = torch.Generator().manual_seed(seed)
    clips = diffusion.sample(model, n, length, steps=steps, eta=eta, generator=g, schedule=schedule,
                             batch_size=batch, progress=progress)
    return clips.clamp(-1, 1).cpu()


def sampler_description(T: int, steps: int | None, eta: float = 1.0) -> str:
    """What a report says about the sampler that made its clips (`sample_clips` with these `steps`, `eta`)."""
    visited = len(diffusion.timesteps(T, steps))
    if visited == T:
        return "ancestral DDPM over all T steps (sigma_t^2 = posterior variance)"
    return f"strided schedule of {visited} of the {T} steps, DDIM update with eta {eta}"


class DiffusionTask(Task):
    name = "diffusion"
    loss_tag, loss_unit = "train/loss", "mse"
    plateau_key = "val_loss"

    def __init__(self, job):
        super().__init__(job)
        self.schedule = diffusion.Schedule.of(job.model)
        self.levels = level_steps(self.schedule.T, job.eval.diffusion.noise_levels)
        # val/loss, then val/loss_tNNN for each level (the trainer logs and checkpoints these)
        self.val_keys = ("val_loss",) + tuple(f"val_loss_t{t:03d}" for t in self.levels)
        self.sample_quality = SampleQuality.of(job)

    def build_model(self) -> torch.nn.Module:
        return DiffWaveSaShiMi(self.job.model)

    def examples(self) -> NoisedWaveExamples:
        return NoisedWaveExamples(self.job.data.crop, self.schedule.T)

    def loss_sums(self, model, batch, autocast):
        """(ε squared error summed over every position of the batch, the number of positions)."""
        x0, t, eps = batch
        with autocast():
            sq = diffusion.squared_error(model, x0, t, eps, self.schedule)
        return sq.sum(), torch.tensor(float(sq.numel()), device=sq.device)

    def units(self, batch) -> int:
        return batch[0].shape[1]  # positions per clip (the crop)

    @torch.no_grad()
    def eval_sums(self, model, batches, device, autocast) -> torch.Tensor:
        """[per-level sums of the clips' mean ε-MSE (levels), per-level clip counts (levels)] (float64, on
        `device`): each clip at every step of `self.levels`, with its own ε."""
        was_training = model.training
        model.eval()
        T, n = self.schedule.T, len(self.levels)
        sums = torch.zeros(2, n, dtype=torch.float64, device=device)
        for x0, _, eps in batches:
            x0, eps = x0.to(device), eps.to(device)
            for t_k in self.levels:
                t = torch.full((x0.shape[0],), t_k, dtype=torch.int64, device=device)
                with autocast():
                    per_clip = diffusion.squared_error(model, x0, t, eps, self.schedule).mean(-1)
                sums += diffusion.loss_by_level(per_clip, t, T, buckets=n)
        model.train(was_training)
        return sums.flatten()

    def metrics(self, sums: list[float]) -> dict:
        """val_loss: the mean over levels and clips (every level holds every clip); val_loss_tNNN: one level's."""
        n = len(self.levels)
        total, counts = sums[:n], sums[n:]
        out = {"val_loss": sum(total) / max(sum(counts), 1), "clips": int(counts[0]) if n else 0}
        out.update({k: s / max(c, 1) for k, s, c in zip(self.val_keys[1:], total, counts)})
        return out

    def val_line(self, metrics: dict) -> str:
        first, last = self.val_keys[1], self.val_keys[-1]
        return (f"val loss {metrics['val_loss']:.5f} ({metrics['clips']} clips x {len(self.levels)} noise levels; "
                f"t={self.levels[0]}: {metrics[first]:.4f} ... t={self.levels[-1]}: {metrics[last]:.5f})")

    def generate(self, model: torch.nn.Module, n: int, length: int, steps: int | None, seed: int) -> torch.Tensor:
        """`sample_clips` with this job's schedule, eval.diffusion.clips clips per network evaluation."""
        return sample_clips(model, n, length, steps=steps, seed=seed, batch=self.job.eval.diffusion.clips,
                            schedule=self.schedule)

    def metric_clips(self, model: torch.nn.Module, n: int, step: int) -> torch.Tensor:
        """The clips the SC09 metrics score at an evaluation (eval.sc09_metrics): `n` clips of data.crop
        samples (1 s for the SC09 jobs), sampled with eval.diffusion.metrics_steps, seeded by the step."""
        return self.generate(model, n, self.job.data.crop, self.job.eval.diffusion.metrics_steps,
                             mix_seed(self.job.seed, PURPOSE_METRIC_CLIPS, step))

    @torch.no_grad()
    def after_evaluation(self, ctx: EvalContext) -> None:
        """eval.diffusion.clips clips of eval.generate_samples samples (0: none), one after the other with
        short silences, as generated/audio and generated/spectrogram; perf/generate_s is what they cost.
        With eval.sc09_metrics, also `samples` clips (`metric_clips`) scored and logged under samples/
        (perf/sc09_generate_s: what sampling them cost)."""
        cfg, n = self.job.eval.diffusion, self.job.eval.generate_samples
        if not (n or self.sample_quality):
            return
        if not ctx.sample_rate:
            raise ValueError(f"job {self.job.name!r}: logging audio needs the data's sample rate, and the shard "
                             f"manifest of {self.job.data.shards} gives none")
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            if self.sample_quality is not None:
                self.sample_quality.generate_and_log(ctx, lambda k: self.metric_clips(ctx.model, k, ctx.step),
                                                     ctx.sample_rate)
            if n:
                self._log_generated(ctx, cfg, n)
        finally:
            ctx.model.train(was_training)

    def _log_generated(self, ctx: EvalContext, cfg, n: int) -> None:
        t0 = time.perf_counter()
        clips = self.generate(ctx.model, cfg.clips, n, cfg.steps, mix_seed(self.job.seed, PURPOSE_EVAL_CLIPS, ctx.step))
        gap = torch.zeros(int(GAP_SECONDS * ctx.sample_rate))
        wave = torch.cat([piece for clip in clips for piece in (clip, gap)][:-1])
        ctx.board.audio("generated/audio", wave, ctx.step, ctx.sample_rate)
        ctx.board.image("generated/spectrogram", spectrogram_image(wave), ctx.step, dataformats="HW")
        ctx.board.scalars({"perf/generate_s": time.perf_counter() - t0}, ctx.step)

    def after_training(self, ctx: DriverContext) -> list[str]:
        """The final val loss and one clip (eval.generate_samples, else data.crop samples) sampled from the
        newest checkpoint with eval.diffusion.steps, as a WAV."""
        lines = []
        if "val_loss" in ctx.metrics:
            lines.append(f"final val loss: {ctx.metrics['val_loss']:.5f} (ε-MSE over {len(self.levels)} noise "
                         f"levels, step {ctx.metrics.get('step')})")
        if ctx.write_wav and ctx.checkpoint_dir:
            loaded = ctx.load_checkpoint(ctx.checkpoint_dir, task=self.name)
            n, steps = self.job.eval.generate_samples or self.job.data.crop, self.job.eval.diffusion.steps
            clip = self.generate(loaded.model, 1, n, steps, mix_seed(self.job.seed, PURPOSE_CLOSING_WAV))[0]
            path = write_wav(ctx.run_dir.sample_wav(int(ctx.metrics.get("step", 0))), clip, loaded.sample_rate)
            lines.append(f"generated WAV: {path} ({'all' if steps is None else steps} of {self.schedule.T} "
                         f"diffusion steps; `sashimi-generate {ctx.checkpoint_dir} --samples N --out DIR` for more)")
        return lines
