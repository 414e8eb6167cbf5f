"""SC09 sample quality in one place: `score_clips(clips, sample_rate, judge)` gives FID, IS (standard and
the paper script's variant), mIS, AM and NDB (sashimi.sample_metrics) of a set of clips, judged by a
digit classifier that sashimi-train trained (task classify with model.arch). sashimi-eval --metrics sc09
and the training-time hook (eval.sc09_metrics) both call it, so TensorBoard and the JSON agree.

A `Judge` is the classifier plus its reference set: the features and probabilities of its own train split
(as in the paper's script), which FID, AM and NDB compare against. They depend only on the weights and the
data, so they are computed once and cached beside the checkpoint (`sc09_features_<key>.npz`, key = sha256
of the weights and of the dataset's manifest), as are the reference rows (`sc09_reference_<key>.json`:
the train and test splits scored themselves). Where the checkpoint's folder cannot be written (a
read-only bucket), one warning, and the numbers are kept in memory.

This is a shared module because both sides that need it sit apart in the layering: the tasks (which
generate clips at each evaluation) and the tools. The checkpoint loader is handed in by the caller
(`load_judge(..., load_checkpoint)`): the tasks sit below cluster.checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from data_prep import storage
from data_prep.audio_io import resample
from data_prep.manifest import load_manifest, manifest_path, split_shards
from data_prep.reader import BadSamplePolicy, samples
from sashimi import sample_metrics
from sashimi.digit_classifier import DigitClassifier, classify_clips

from .logs import log

REFERENCE_SPLIT = "train"  # FID, AM and NDB compare against it, as the paper's script does
ALL_METRICS = sample_metrics.METRICS  # fid, is, is_s4, mis, am, ndb
TRAINING_METRICS = ("fid", "is", "mis", "am")  # logged under samples/ at each evaluation (NDB needs many clips)
CLASSIFY_BATCH = 256


class Sc09Error(ValueError):
    """A judge or a set of clips that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Reference:
    """The classifier's outputs on its reference split."""

    data: str  # the dataset (sashimi-prep output) the split is read from
    split: str
    features: np.ndarray  # (n, d) float64
    probs: np.ndarray  # (n, classes) float64
    labels: np.ndarray  # (n,) int64


@dataclass
class Judge:
    """A digit classifier in eval mode and its reference set; what `score_clips` needs."""

    model: DigitClassifier
    checkpoint: str
    step: int
    weights_sha256: str
    reference: Reference
    cache_key: str  # of the weights and the dataset's manifest: names the cache files

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def length(self) -> int:
        """Samples the classifier reads: one second."""
        return self.model.config.sample_rate

    @property
    def n_labels(self) -> int:
        return self.model.config.n_labels

    def classify(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features, probabilities) float64 of (N, length) clips."""
        return classify_clips(self.model, clips, CLASSIFY_BATCH)

    def describe(self) -> dict:
        """What a JSON report says about the judge."""
        r = self.reference
        return {"checkpoint": self.checkpoint, "step": self.step, "arch": self.model.config.arch,
                "weights_sha256": self.weights_sha256,
                "reference": {"data": r.data, "split": r.split, "clips": len(r.labels)}}


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the same weights give the same key,
    whatever file or URI they were read from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def conform(wave: np.ndarray, rate: int, target_rate: int, length: int) -> tuple[np.ndarray, bool]:
    """One mono clip as the classifier reads it: resampled to `target_rate`, then its first `length`
    samples, zero-padded when shorter. Returns (float32 (length,), whether anything had to change)."""
    wave = np.asarray(wave, dtype=np.float32)
    changed = rate != target_rate or len(wave) != length
    if rate != target_rate:
        wave = resample(wave, int(rate), int(target_rate))
    out = np.zeros(length, dtype=np.float32)
    n = min(length, len(wave))
    out[:n] = wave[:n]
    return out, changed


def score_clips(clips, sample_rate: int, judge: Judge, metrics: tuple[str, ...] = ALL_METRICS,
                seconds: dict | None = None) -> dict:
    """The sample-quality metrics of `clips` ((N, L) float waveforms in [-1, 1] at `sample_rate`, a numpy
    array or a tensor on any device; clips at another rate are resampled to the judge's and every clip is
    cropped or zero-padded to 1 s) against the judge's reference set. Returns {metric: value for `metrics`, "clips": N, "class_counts": how many clips
    the classifier assigns to each digit}. `seconds`, when given, receives the time of the classifier
    ("classify") and of each metric. Sc09Error for fewer clips than the classifier has classes."""
    if torch.is_tensor(clips):
        clips = clips.detach().float().cpu().numpy()
    x = np.asarray(clips, dtype=np.float32)
    if x.ndim != 2:
        raise Sc09Error(f"score_clips: expected (clips, samples) waveforms, got shape {x.shape}")
    if len(x) < judge.n_labels:
        raise Sc09Error(f"score_clips: {len(x)} clips are fewer than the classifier's {judge.n_labels} classes: "
                        f"too few to score")
    if not np.isfinite(x).all():
        raise Sc09Error("score_clips: the clips contain NaN or Inf")
    if sample_rate != judge.sample_rate or x.shape[1] != judge.length:
        x = np.stack([conform(w, sample_rate, judge.sample_rate, judge.length)[0] for w in x])
    t0 = time.perf_counter()
    feats, probs = judge.classify(x)
    if seconds is not None:
        seconds["classify"] = time.perf_counter() - t0
    ref = judge.reference
    out = sample_metrics.all_metrics(ref.features, ref.probs, feats, probs, seconds=seconds, names=tuple(metrics))
    out["clips"] = len(x)
    out["class_counts"] = np.bincount(probs.argmax(1), minlength=judge.n_labels).tolist()
    return out


# ---- the reference set --------------------------------------------------------------------------------

def classify_split(model: DigitClassifier, data: str, split: str, manifest: dict | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, probabilities, labels) of every clip of a labelled split (sashimi-prep shard --preset sc09),
    streamed in batches; clips are conformed to the classifier's rate and length. A bad shard or sample
    raises BadDataError naming it (the reference must be the whole split)."""
    manifest = manifest or load_manifest(data)
    if split not in manifest["splits"]:
        raise Sc09Error(f"{data}: the dataset has no {split!r} split (it has {sorted(manifest['splits'])})")
    cfg = model.config
    feats, probs, labels, batch = [], [], [], []

    def flush():
        f, p = classify_clips(model, np.stack(batch), CLASSIFY_BATCH)
        feats.append(f)
        probs.append(p)
        bar.update(len(batch))
        batch.clear()

    bar = tqdm(total=manifest["splits"][split].get("clips"), desc=f"classifying {split}", unit="clip",
               file=sys.stderr, disable=not progress)
    for raw, s in samples(split_shards(manifest, data, split), BadSamplePolicy("stop")):
        if s.kind != "audio" or s.label is None:
            raise Sc09Error(f"sample {s.key!r} of shard {raw.get('__url__', '?')}: not a labelled audio clip "
                            f"(shard digits with --preset sc09)")
        batch.append(conform(s.data[:s.length], s.sample_rate, cfg.sample_rate, cfg.sample_rate)[0])
        labels.append(s.label)
        if len(batch) == CLASSIFY_BATCH:
            flush()
    if batch:
        flush()
    bar.close()
    if not labels:
        raise Sc09Error(f"{data}: split {split!r} holds no clips")
    return np.concatenate(feats), np.concatenate(probs), np.asarray(labels, dtype=np.int64)


def _cache_dir(checkpoint: str) -> str:
    """The checkpoint's directory (given it or its state.pt)."""
    checkpoint = str(checkpoint).rstrip("/")
    return checkpoint if storage.isdir(checkpoint) else posixpath.dirname(checkpoint) or "."


def _read_cache(path: str, key: str) -> dict | None:
    try:
        if not storage.isfile(path):
            return None
        if path.endswith(".json"):
            out = json.loads(storage.read_text(path))
            return out if out.get("key") == key else None
        with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        return out if str(out.get("key")) == key else None
    except (OSError, ValueError, KeyError) as e:
        log.warning(f"ignoring the unreadable cache {path} ({type(e).__name__}: {str(e)[:200]}); recomputing")
        return None


def _write_cache(path: str, data: bytes) -> None:
    try:
        storage.write_bytes(path, data)
    except OSError as e:
        log.warning(f"could not cache the SC09 reference in {path} ({type(e).__name__}: {str(e)[:200]}): it "
                    f"will be computed again next time")


def load_judge(checkpoint: str, load_checkpoint: Callable, data: str | None = None, device="cpu",
               cache: bool = True, progress: bool = False) -> Judge:
    """The judge of a digit classifier checkpoint: `load_checkpoint` is cluster.checkpoint.load_checkpoint
    (it refuses, naming the file, a checkpoint of another task); `data` overrides the dataset the reference
    split is read from (default: the classifier job's own data.shards). Sc09Error for a classify checkpoint
    of another model (the S4 sequence classifier)."""
    loaded = load_checkpoint(checkpoint, task="classify")
    model = loaded.model
    if not isinstance(model, DigitClassifier):
        raise Sc09Error(f"{checkpoint}: a task 'classify' checkpoint of {type(model).__name__} (job "
                        f"{loaded.job.name!r}), not a digit classifier (model.arch); train one with "
                        f"jobs/sc09-classifier.yaml")
    model = model.to(device).eval()
    data = storage.absolute(data) if data else loaded.job.data.shards
    manifest = load_manifest(data)  # ManifestError naming the path when missing or broken
    manifest_sha = hashlib.sha256(storage.read_bytes(manifest_path(data))).hexdigest()
    sha = weights_sha256(model)
    key = hashlib.sha256(f"{sha}|{manifest_sha}".encode()).hexdigest()[:16]
    path = storage.join(_cache_dir(checkpoint), f"sc09_features_{key}.npz")
    hit = _read_cache(path, key) if cache else None
    if hit is not None:
        feats, probs, labels = hit["features"], hit["probs"], hit["labels"]
    else:
        log.info(f"SC09 reference: classifying the {REFERENCE_SPLIT!r} split of {data} once with {checkpoint}")
        feats, probs, labels = classify_split(model, data, REFERENCE_SPLIT, manifest, progress)
        if cache:
            buf = io.BytesIO()
            np.savez(buf, features=feats, probs=probs, labels=labels, key=np.array(key))
            _write_cache(path, buf.getvalue())
    return Judge(model, str(checkpoint), int(loaded.step), sha, Reference(data, REFERENCE_SPLIT, feats, probs, labels),
                 key)


def _row(judge: Judge, feats: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> dict:
    r = judge.reference
    row = sample_metrics.all_metrics(r.features, r.probs, feats, probs)
    row["clips"] = len(labels)
    row["accuracy"] = float((probs.argmax(1) == labels).mean())
    return row


def reference_rows(judge: Judge, cache: bool = True, progress: bool = False) -> dict:
    """{"train": row, "test": row}: the reference split scored against itself (FID 0: the ceiling) and
    the held-out test split (the val split when there is no test split) against it, each with the
    classifier's accuracy. Cached beside the checkpoint, computed once per (weights, dataset)."""
    path = storage.join(_cache_dir(judge.checkpoint), f"sc09_reference_{judge.cache_key}.json")
    hit = _read_cache(path, judge.cache_key) if cache else None
    if hit is not None:
        return hit["rows"]
    r = judge.reference
    manifest = load_manifest(r.data)
    held_out = "test" if manifest["splits"].get("test", {}).get("shards") else "val"
    rows = {r.split: _row(judge, r.features, r.probs, r.labels),
            held_out: _row(judge, *classify_split(judge.model, r.data, held_out, manifest, progress))}
    if cache:
        _write_cache(path, (json.dumps({"key": judge.cache_key, "checkpoint": judge.checkpoint, "data": r.data,
                                        "rows": rows}, indent=1) + "\n").encode())
    return rows
