"""What differs between the two kinds of job that sashimi-train runs (`task:` in the job YAML).

generate: SaShiMi, batches (tokens, mask), loss = next-token NLL in bits, validation = val NLL.
classify: sashimi.classifier.S4Classifier, batches (tokens, mask, labels), loss = cross-entropy (nats)
          over N_LABELS classes, validation = val accuracy and val cross-entropy, and after the last
          step the accuracy on the whole test split (`finish_classify`).

Everything else (DDP, data streams, checkpoints, resume, TensorBoard, failures) is shared in
cluster/trainer.py. Metric names are "val_<x>" in Ray's metrics and "val/<x>" in TensorBoard.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from data_prep import storage
from sashimi import SaShiMi, SaShiMiConfig
from sashimi.classifier import S4Classifier
from sashimi.metrics import nll_bits, nll_bits_sums, shift_inputs
from sashimi.quantize import zero_class

from .data import split_batches
from .rundir import RunDir

N_LABELS = 10  # digits; classify samples must carry a label in 0..N_LABELS-1


class GenerateTask:
    name = "generate"
    n_labels = None  # batches without labels
    loss_tag, loss_unit = "train/loss_bits", "bits"
    val_keys = ("val_nll_bits",)  # reported by every rank (from sums merged over the ranks), in this order
    plateau_key = "val_nll_bits"  # what the plateau schedule watches (lower is better)

    def build_model(self, config: SaShiMiConfig) -> torch.nn.Module:
        return SaShiMi(config)

    def loss(self, model, batch, autocast) -> torch.Tensor:
        tokens, mask = batch
        with autocast():
            logits = model(shift_inputs(tokens, zero_class()))
        return nll_bits(logits, tokens, mask)

    @torch.no_grad()
    def val_sums(self, model, batches, device, autocast) -> torch.Tensor:
        """[total bits, counted positions] over `batches` (float64, on `device`): sums, so shares of the
        val batches scored on several ranks merge exactly by addition."""
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

    def val_metrics(self, sums: list[float]) -> dict:
        """Mean val NLL in bits over all valid positions (exact pooled average)."""
        bits, count = sums
        return {"val_nll_bits": bits / max(count, 1)}

    def evaluate(self, model, batches, device, autocast) -> dict:
        return self.val_metrics(self.val_sums(model, batches, device, autocast).tolist())

    def val_line(self, res: dict) -> str:
        return f"val NLL {res['val_nll_bits']:.4f} bits"


class ClassifyTask:
    name = "classify"
    n_labels = N_LABELS
    loss_tag, loss_unit = "train/loss", "nats"
    val_keys = ("val_loss", "val_accuracy")
    plateau_key = "val_loss"

    def build_model(self, config: SaShiMiConfig) -> torch.nn.Module:
        return S4Classifier(config, n_labels=N_LABELS)

    def loss(self, model, batch, autocast) -> torch.Tensor:
        tokens, mask, labels = batch
        with autocast():
            logits = model(tokens, mask)
        return F.cross_entropy(logits.float(), labels)

    @torch.no_grad()
    def val_sums(self, model, batches, device, autocast) -> torch.Tensor:
        """[cross-entropy sum (nats), correct, examples] over `batches` (float64, on `device`; sums merge
        over ranks by addition)."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        for tokens, mask, labels in batches:
            tokens, mask, labels = tokens.to(device), mask.to(device), labels.to(device)
            with autocast():
                logits = model(tokens, mask).float()
            sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                                 (logits.argmax(-1) == labels).sum().double(),
                                 torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
        model.train(was_training)
        return sums

    def val_metrics(self, sums: list[float]) -> dict:
        """Accuracy and mean cross-entropy (nats) over every example, plus the count."""
        loss, correct, n = sums
        return {"val_loss": loss / max(n, 1), "val_accuracy": correct / max(n, 1), "examples": int(n)}

    def evaluate(self, model, batches, device, autocast) -> dict:
        return self.val_metrics(self.val_sums(model, batches, device, autocast).tolist())

    def val_line(self, res: dict) -> str:
        return f"val accuracy {res['val_accuracy']:.4f} loss {res['val_loss']:.4f} nats ({res['examples']} examples)"


TASKS = {"generate": GenerateTask(), "classify": ClassifyTask()}


def task_of(job) -> GenerateTask | ClassifyTask:
    """The task of a JobConfig or a job dict (checkpoints written before `task` existed are generate)."""
    name = job.get("task", "generate") if isinstance(job, dict) else job.task
    return TASKS[name]


def tb_tag(key: str) -> str:
    """"val_nll_bits" -> "val/nll_bits"."""
    return key.replace("_", "/", 1)


def read_test_result(run_dir: RunDir, step: int | None = None) -> dict | None:
    """The test_result.json a classify run wrote in its run dir, if any (and if for `step`)."""
    try:
        res = json.loads(storage.read_text(run_dir.test_result))
    except (OSError, ValueError):
        return None
    return res if step is None or res.get("step") == step else None


def finish_classify(job, model, urls: list[str], split: str, step: int, device, autocast, writer,
                    run_dir: RunDir, log) -> dict:
    """Rank 0 after the last step of a classify run: accuracy on every example of `split` (the test split,
    or val when the dataset has none), logged to TensorBoard (test/accuracy, test/loss), printed, and
    written to <run_dir>/test_result.json (the driver prints it from there).
    Returns the test_* metrics."""
    batches = split_batches(urls, batch_size=job.eval.val_batch_size, crop=job.data.crop,
                            quantization=job.data.quantization, seed=job.seed,
                            on_bad_sample=job.data.on_bad_sample, n_labels=N_LABELS)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        r = TASKS["classify"].evaluate(model, batches, device, autocast)
    if not r["examples"]:
        raise ValueError(f"job {job.name!r}: split {split!r} of {job.data.shards} holds no labelled examples")
    out = {"test_accuracy": r["val_accuracy"], "test_loss": r["val_loss"], "test_examples": r["examples"]}
    writer.scalars({"test/accuracy": out["test_accuracy"], "test/loss": out["test_loss"]}, step)
    writer.flush()
    log(f"test accuracy {out['test_accuracy']:.4f} on {out['test_examples']} digits "
        f"(split {split!r}, step {step}, loss {out['test_loss']:.4f} nats)")
    result = {"job": job.name, "task": "classify", "step": step, "split": split, "shards": job.data.shards,
              "examples": out["test_examples"], "accuracy": out["test_accuracy"], "loss_nats": out["test_loss"]}
    storage.write_text(run_dir.test_result, json.dumps(result, indent=1) + "\n")
    return out
