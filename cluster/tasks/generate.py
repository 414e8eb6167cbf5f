"""task: generate. SaShiMi trained on next-token prediction: batches (tokens, mask), loss = NLL in bits
per sample, validation = val NLL in bits. Every evaluation logs a generated clip (audio and its
spectrogram, or a digit image for pixels) to TensorBoard, and with eval.sc09_metrics the sample-quality
metrics of a batch of generated 1 s clips (tasks/sample_quality.py); after training the driver writes a
WAV sampled from the newest checkpoint."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from sashimi import SaShiMi
from sashimi.generate import generate
from sashimi.metrics import nll_bits_sums, nll_bits_total, shift_inputs
from sashimi.quantize import dequantize, zero_class

from ..audio import spectrogram_image, write_wav
from ..seeds import mix_seed
from .base import DriverContext, EvalContext, Task
from .examples import TokenExamples
from .sample_quality import SampleQuality

SC09_BATCH = 256  # clips generated together for eval.sc09_metrics


class GenerateTask(Task):
    name = "generate"
    loss_tag, loss_unit = "train/loss_bits", "bits"
    val_keys = ("val_nll_bits",)
    plateau_key = "val_nll_bits"

    def __init__(self, job):
        super().__init__(job)
        self.sample_quality = SampleQuality.of(job)

    def build_model(self) -> torch.nn.Module:
        return SaShiMi(self.job.model)

    def examples(self) -> TokenExamples:
        return TokenExamples(self.job.data.crop, self.job.data.quantization)

    def loss_sums(self, model, batch, autocast):
        """(bits summed over the valid positions, their count)."""
        tokens, mask = batch
        with autocast():
            logits = model(shift_inputs(tokens, zero_class()))
        return nll_bits_total(logits, tokens, mask)

    def units(self, batch) -> int:
        return batch[0].shape[1]  # positions per example (the crop)

    @torch.no_grad()
    def eval_sums(self, model, batches, device, autocast) -> torch.Tensor:
        """[total bits, counted positions] (float64, on `device`)."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for tokens, mask in batches:
            tokens, mask = tokens.to(device), mask.to(device)
            with autocast():
                logits = model(shift_inputs(tokens, zero_class()))
            sums += nll_bits_sums(logits, tokens, mask)  # stays on the device: no host sync per batch
        model.train(was_training)
        return sums

    def metrics(self, sums: list[float]) -> dict:
        """Mean val NLL in bits over all valid positions (exact pooled average)."""
        bits, count = sums
        return {"val_nll_bits": bits / max(count, 1)}

    def val_line(self, metrics: dict) -> str:
        return f"val NLL {metrics['val_nll_bits']:.4f} bits"

    @torch.no_grad()
    def after_evaluation(self, ctx: EvalContext) -> None:
        """A clip of eval.generate_samples tokens (perf/generate_s: what it cost). Step mode compiles when
        the amount of work repays it (`generate(compile=None)`) and runs eager otherwise; nothing goes to
        the on-disk compile cache: its packages are keyed by the weights, which differ at every
        evaluation, so none would ever be loaded again."""
        n, quantization = self.job.eval.generate_samples, self.job.data.quantization
        if quantization != "none" and not ctx.sample_rate:
            raise ValueError(f"job {self.job.name!r}: audio ({quantization}) needs the data's sample rate, and the "
                             f"shard manifest of {self.job.data.shards} gives none")
        if self.sample_quality is not None:
            self._log_sample_quality(ctx)
        if not n:
            return
        t0 = time.perf_counter()
        was_training = ctx.model.training
        ctx.model.eval()
        tokens = generate(ctx.model, n, batch=1, seed=mix_seed(self.job.seed, ctx.step), compile=None,
                          cache_dir=None)[0].cpu()
        ctx.model.train(was_training)
        if quantization == "none":  # pixels: shown as a square image when they make one
            side = int(round(n ** 0.5))
            if side * side == n:
                ctx.board.image("generated/image", tokens.reshape(1, side, side).float() / 255, ctx.step)
        else:
            wave = dequantize(tokens, quantization)
            ctx.board.audio("generated/audio", wave, ctx.step, ctx.sample_rate)
            ctx.board.image("generated/spectrogram", spectrogram_image(wave), ctx.step, dataformats="HW")
        ctx.board.scalars({"perf/generate_s": time.perf_counter() - t0}, ctx.step)

    def _log_sample_quality(self, ctx: EvalContext) -> None:
        """eval.sc09_metrics: `samples` clips of 1 s generated in batches (seeded by the step), scored and
        logged under samples/."""
        self.sample_quality.generate_and_log(
            ctx, lambda n: generate_clips(ctx.model, n, ctx.sample_rate, self.job.data.quantization,
                                          seed=mix_seed(self.job.seed, ctx.step, 9), batch=SC09_BATCH,
                                          cache_dir=None)[0],
            ctx.sample_rate)

    def after_training(self, ctx: DriverContext) -> list[str]:
        """The final val NLL and a WAV sampled from the newest checkpoint (audio jobs)."""
        lines = []
        if "val_nll_bits" in ctx.metrics:
            lines.append(f"final val NLL: {ctx.metrics['val_nll_bits']:.4f} bits (step {ctx.metrics.get('step')})")
        if ctx.write_wav and ctx.checkpoint_dir and self.job.data.quantization != "none":
            path = sample_wav(ctx.load_checkpoint(ctx.checkpoint_dir), ctx.run_dir.sample_wav(int(ctx.metrics.get("step", 0))),
                              self.job.eval.generate_samples or 16000, seed=self.job.seed)
            lines.append(f"generated WAV: {path}")
        return lines


def sample_wav(loaded, out_path: str, n_samples: int, seed: int = 0) -> str:
    """`n_samples` generated from a loaded checkpoint (cluster.checkpoint.LoadedCheckpoint: model,
    quantisation and sample rate all from it) as a WAV at `out_path` (a local path or a URI)."""
    if loaded.quantization == "none":
        raise ValueError("this checkpoint models pixels, not audio: no WAV to write")
    with torch.no_grad():
        tokens = generate(loaded.model, n_samples, batch=1, seed=seed)[0]
    return write_wav(out_path, dequantize(tokens, loaded.quantization), loaded.sample_rate)


def generate_clips(model: SaShiMi, n_clips: int, n_samples: int, quantization: str, seed: int, batch: int = 64,
                   compile: bool | None = None, cache_dir="default", progress: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`n_clips` sequences of `n_samples` tokens, in batches of `batch` (batch b seeded mix_seed(seed, b), so
    the clips do not depend on how many are asked for after them), decoded to waveforms: (float32 (N, L) in
    [-1, 1], float64 (N,) each clip's log-likelihood in nats under the model, the sum of its tokens' log
    probabilities as sampled at temperature 1). `compile`: as sashimi.generate (None: when it pays)."""
    if quantization == "none":
        raise ValueError("this model generates pixels, not audio clips")
    was_training = model.training
    model.eval()
    clips, loglik = [], []
    bar = tqdm(total=n_clips, desc="generating clips", unit="clip", file=sys.stderr, disable=not progress)
    try:
        for b, start in enumerate(range(0, n_clips, batch)):
            size = min(batch, n_clips - start)
            tokens, logp = generate(model, n_samples, batch=size, seed=mix_seed(seed, b), compile=compile,
                                    cache_dir=cache_dir, return_logprobs=True)
            clips.append(dequantize(tokens.cpu(), quantization).float().numpy())
            loglik.append(logp.sum(1).cpu().numpy())
            bar.update(size)
    finally:
        bar.close()
        model.train(was_training)
    return np.concatenate(clips), np.concatenate(loglik)
