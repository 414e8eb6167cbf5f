"""task: classify. Two models, picked by the job's model section:

* the S4 sequence classifier (sashimi.classifier.S4Classifier) on token sequences (sequential MNIST):
  batches (tokens, mask, labels), N_LABELS classes;
* with `model.arch` (a DigitClassifierConfig), the digit classifier that judges SC09 samples
  (sashimi.digit_classifier) on 1 s waveforms: batches (waves, augmentation seeds, labels); during
  training each wave is augmented from its own seed (`data.augment`; validation and test see clean clips).

Loss = cross-entropy (nats; `training.label_smoothing` smooths the training targets only), validation =
val accuracy and val cross-entropy. After the last step rank 0 scores the whole test split (the val split
when the dataset has none), logs test/accuracy, and writes <run dir>/test_result.json, which the driver
prints."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from data_prep import storage
from sashimi.augment import augment_each
from sashimi.classifier import S4Classifier
from sashimi.digit_classifier import DigitClassifier, DigitClassifierConfig

from ..config import JobConfigError
from ..logs import log
from ..rundir import RunDir
from .base import DriverContext, FinishContext, Task
from .examples import TokenExamples, WaveExamples

N_LABELS = 10  # digits; classify samples must carry a label in 0..N_LABELS-1


class ClassifyTask(Task):
    name = "classify"
    loss_tag, loss_unit = "train/loss", "nats"
    val_keys = ("val_loss", "val_accuracy")
    plateau_key = "val_loss"
    needs_test_split = True

    def __init__(self, job):
        super().__init__(job)
        self.digits = isinstance(job.model, DigitClassifierConfig)  # the waveform digit classifier

    def build_model(self) -> torch.nn.Module:
        if self.digits:
            return DigitClassifier(self.job.model)
        return S4Classifier(self.job.model, n_labels=N_LABELS)

    def check_data(self, manifest: dict, where: str) -> None:
        """The digit classifier reads audio at its model.sample_rate: a dataset at another rate is refused."""
        rate = manifest.get("sample_rate")
        if self.digits and rate != self.job.model.sample_rate:
            raise JobConfigError(f"{where}: model.sample_rate: {self.job.model.sample_rate} Hz, but the clips of "
                                 f"data.shards {self.job.data.shards} are {rate} Hz (shard them at "
                                 f"--sample-rate {self.job.model.sample_rate}, or set model.sample_rate: {rate})")

    def examples(self) -> TokenExamples | WaveExamples:
        if self.digits:
            m = self.job.model
            return WaveExamples(m.sample_rate, m.sample_rate, m.n_labels)  # 1 s
        return TokenExamples(self.job.data.crop, self.job.data.quantization, N_LABELS)

    def _logits(self, model, inputs, autocast, train: bool) -> torch.Tensor:
        """float32 logits of a batch's inputs (everything but its labels)."""
        if self.digits:
            waves, seeds = inputs
            if train and self.job.data.augment is not None:
                waves = augment_each(waves, seeds, self.job.data.augment, self.job.model.sample_rate)
            with autocast():
                return model(waves).float()
        tokens, mask = inputs
        with autocast():
            return model(tokens, mask).float()

    def loss_sums(self, model, batch, autocast):
        """(cross-entropy summed over the clips, in nats, against targets smoothed by
        training.label_smoothing; the number of clips)."""
        *inputs, labels = batch
        logits = self._logits(model, inputs, autocast, train=True)
        loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=self.job.training.label_smoothing)
        return loss, torch.tensor(float(labels.numel()), device=labels.device)

    def units(self, batch) -> int:
        return 1

    @torch.no_grad()
    def eval_sums(self, model, batches, device, autocast) -> torch.Tensor:
        """[cross-entropy sum (nats), correct, examples] (float64, on `device`)."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        for *inputs, labels in batches:
            inputs, labels = [t.to(device) for t in inputs], labels.to(device)
            logits = self._logits(model, inputs, autocast, train=False)
            sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                                 (logits.argmax(-1) == labels).sum().double(),
                                 torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
        model.train(was_training)
        return sums

    def metrics(self, sums: list[float]) -> dict:
        """Accuracy and mean cross-entropy (nats) over every example, plus the count."""
        loss, correct, n = sums
        return {"val_loss": loss / max(n, 1), "val_accuracy": correct / max(n, 1), "examples": int(n)}

    def val_line(self, metrics: dict) -> str:
        return (f"val accuracy {metrics['val_accuracy']:.4f} loss {metrics['val_loss']:.4f} nats "
                f"({metrics['examples']} examples)")

    def finish(self, ctx: FinishContext) -> None:
        """Accuracy on every example of the test split, to TensorBoard (test/accuracy, test/loss), the log,
        and <run dir>/test_result.json."""
        job, split = self.job, ctx.test_split
        r = self.evaluate(ctx.model, ctx.batches(ctx.test), ctx.device, ctx.autocast)
        if not r["examples"]:
            raise ValueError(f"job {job.name!r}: split {split!r} of {job.data.shards} holds no labelled examples")
        ctx.board.scalars({"test/accuracy": r["val_accuracy"], "test/loss": r["val_loss"]}, ctx.step)
        ctx.board.flush()
        log.info(f"test accuracy {r['val_accuracy']:.4f} on {r['examples']} digits "
                 f"(split {split!r}, step {ctx.step}, loss {r['val_loss']:.4f} nats)")
        result = {"job": job.name, "task": self.name, "step": ctx.step, "split": split, "shards": job.data.shards,
                  "examples": r["examples"], "accuracy": r["val_accuracy"], "loss_nats": r["val_loss"]}
        storage.write_text(ctx.run_dir.test_result, json.dumps(result, indent=1) + "\n")

    def after_training(self, ctx: DriverContext) -> list[str]:
        res = read_test_result(ctx.run_dir, ctx.metrics.get("step"))
        if res is None:
            return ["test accuracy: see the worker log above and test/accuracy in TensorBoard"]
        return [f"test accuracy {res['accuracy']:.4f} on {res['examples']} digits (split {res['split']!r}, "
                f"step {res['step']}; {ctx.run_dir.test_result})"]


def read_test_result(run_dir: RunDir, step: int | None = None) -> dict | None:
    """The test_result.json a classify run wrote in its run dir, if any (and if for `step`)."""
    try:
        res = json.loads(storage.read_text(run_dir.test_result))
    except (OSError, ValueError):
        return None
    return res if step is None or res.get("step") == step else None
