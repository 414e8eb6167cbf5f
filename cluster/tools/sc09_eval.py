"""``sashimi-eval --metrics sc09``: sample quality as the SaShiMi paper measures it on SC09 (FID, IS and the
paper script's IS variant, mIS, AM, NDB), judged by a digit classifier trained with sashimi-train
(jobs/sc09-classifier.yaml).

    sashimi-eval --metrics sc09 --classifier CLS_CKPT samples/            # a folder of WAVs (or s3://...)
    sashimi-eval --metrics sc09 --classifier CLS_CKPT GEN_CKPT --samples 10240 --likelihood-trim 0.4,0.95
    sashimi-eval --metrics sc09 --classifier CLS_CKPT --reference         # the real train and test splits

The metrics come from cluster.sc09.score_clips, the function the training-time hook calls too. The
reference set (FID, AM, NDB) is the classifier's train split, read from the dataset its job trained on
(``--data`` overrides), classified once and cached beside the checkpoint, as are the ``--reference`` rows.

Likelihood trim (autoregressive sources only): the generated clips are sorted by their own log-likelihood
under the model, and sorted positions floor(LOW·N) to floor(HIGH·N) are scored: all of them, so
10,240 clips at 0.4,0.95 give 5,632. (The paper's script, in its --threshold mode, tunes the two
thresholds on a random half of the clips and scores the other half trimmed: 2,816 of 10,240.)
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data_prep import storage
from data_prep.audio_io import downmix
from data_prep.manifest import ManifestError
from data_prep.reader import BadDataError
from sashimi.diffusion import Schedule
from sashimi.sample_metrics import likelihood_trim

from ..checkpoint import CheckpointError, load_checkpoint
from ..checkpoint.load import checkpoint_task
from ..checkpoint.store import state_file
from ..logs import log
from ..sc09 import ALL_METRICS, Judge, Sc09Error, conform, load_judge, reference_rows, score_clips
from ..tasks.diffusion import sample_clips, sampler_description
from ..tasks.generate import generate_clips

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TRIM_CONVENTION = ("clips sorted by their log-likelihood under the generator (the sum of their tokens' log "
                   "probabilities as sampled); sorted positions floor(low*N) to floor(high*N) of all N generated clips "
                   "are scored (the paper's script tunes the thresholds on a random half and scores the other half)")
HEADERS = {"fid": "FID", "is": "IS", "is_s4": "IS(s4)", "mis": "mIS", "am": "AM", "ndb": "NDB"}
METRIC_NOTES = {
    "fid": "Frechet distance of the classifier's features to the reference split's (lower is better)",
    "is": "standard inception score exp(E KL(p(y|x) || p(y))) (higher is better, at most the number of classes)",
    "is_s4": "the paper script's IS variant (sashimi.sample_metrics.inception_score_s4), for comparison with "
             "the paper's tables",
    "mis": "modified inception score exp(E KL(p_i || p_j)) over 10,000 random pairs (higher is better)",
    "am": "AM score: KL(mean p_ref || mean p) + mean entropy (lower is better)",
    "ndb": "NDB/k: share of 50 k-means bins of the reference features whose occupancy differs (lower is better)",
}


def parse_trim(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--likelihood-trim: expected LOW,HIGH such as 0.4,0.95, got {text!r}")
    if not 0 <= low < high <= 1:
        raise argparse.ArgumentTypeError(f"--likelihood-trim: need 0 <= LOW < HIGH <= 1, got {text!r}")
    return low, high


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sashimi-eval --metrics sc09", description=__doc__.split("\n\n")[0],
                                epilog="Writes a JSON (--out) and prints a table.")
    p.add_argument("source", nargs="?",
                   help="a folder of audio clips (local or a bucket URI), or a generator checkpoint (it then "
                        "generates --samples clips of 1 s)")
    p.add_argument("--classifier", required=True, help="digit classifier checkpoint (jobs/sc09-classifier.yaml)")
    p.add_argument("--data", help="dataset of the reference split (default: the one the classifier trained on)")
    p.add_argument("--reference", action="store_true",
                   help="also score the real train and test splits (cached beside the classifier checkpoint)")
    p.add_argument("--samples", type=int, default=2048, help="clips to generate from a checkpoint (default 2048)")
    p.add_argument("--batch", type=int, default=64, help="clips generated together")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.add_argument("--steps", type=int,
                   help="diffusion checkpoints: a strided schedule of this many of the T steps (default: all T, "
                        "ancestral)")
    p.add_argument("--likelihood-trim", type=parse_trim, metavar="LOW,HIGH",
                   help="score only the clips between these quantiles of their log-likelihood (the paper: "
                        "0.4,0.95); off by default")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--compile", dest="compile", action="store_true", default=None,
                      help="compile the generator's step (default: when the amount of work repays it)")
    mode.add_argument("--eager", dest="compile", action="store_false", help="never compile")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cached reference")
    p.add_argument("--out", help="JSON file to write (a local path or a URI)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.source is None and not a.reference:
        p.error("give a SOURCE to score, --reference, or both")
    if a.samples < 1 or a.batch < 1 or (a.steps is not None and a.steps < 1):
        p.error("--samples, --batch and --steps must be >= 1")
    return a


def is_checkpoint(source: str) -> bool:
    return storage.isfile(state_file(source))


def read_folder(folder: str, judge: Judge, progress: bool) -> tuple[np.ndarray, dict]:
    """Every audio file directly in `folder` as a clip the classifier reads (resampled, cropped or padded
    to 1 s: one warning counts them); unreadable files are listed and skipped."""
    names = [n for n in storage.listdir(folder) if n.lower().endswith(AUDIO_EXTENSIONS)]
    clips, unreadable, changed = [], [], 0
    for name in tqdm(names, desc="reading clips", unit="file", file=sys.stderr, disable=not progress):
        path = storage.join(folder, name)
        try:
            data, rate = sf.read(io.BytesIO(storage.read_bytes(path)), dtype="float32", always_2d=True)
            if not len(data):
                raise ValueError("no audio frames")
            if not np.isfinite(data).all():
                raise ValueError("NaN or Inf samples")
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
            unreadable.append({"file": name, "reason": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        clip, was_changed = conform(downmix(data), rate, judge.sample_rate, judge.length)
        clips.append(clip)
        changed += was_changed
    if unreadable:
        shown = ", ".join(f"{u['file']} ({u['reason']})" for u in unreadable[:10])
        more = f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
        log.warning(f"{folder}: skipped {len(unreadable)} unreadable file(s): {shown}{more}")
    if changed:
        log.warning(f"{folder}: {changed} of {len(clips)} clips were not 1 s at {judge.sample_rate} Hz: resampled "
                    f"to {judge.sample_rate} Hz and cropped or zero-padded to {judge.length} samples")
    if len(clips) < judge.n_labels:
        raise Sc09Error(f"{folder}: {len(clips)} readable audio clip(s) ({', '.join(AUDIO_EXTENSIONS)}), fewer than "
                        f"the classifier's {judge.n_labels} classes: nothing to score")
    info = {"kind": "folder", "path": storage.absolute(folder), "files": len(names), "scored_files": len(clips),
            "unreadable": unreadable, "conformed": changed}
    return np.stack(clips), info


def generate_from(checkpoint: str, judge: Judge, a) -> tuple[np.ndarray, int, dict, dict | None]:
    """(clips, their sample rate, what the JSON says about the source, the trim) from a generator checkpoint:
    an autoregressive SaShiMi, or a DiffWave+SaShiMi (task diffusion: `sample_from_diffusion`)."""
    if checkpoint_task(checkpoint) == "diffusion":
        return sample_from_diffusion(checkpoint, judge, a)
    if a.steps is not None:
        raise Sc09Error(f"{checkpoint}: --steps is a diffusion sampling schedule; this is an autoregressive checkpoint")
    loaded = load_checkpoint(checkpoint)  # another task's checkpoint: WrongTaskError naming the file
    if loaded.quantization == "none" or not loaded.sample_rate:
        raise Sc09Error(f"{checkpoint}: a pixel model (quantization {loaded.quantization!r}), not an audio generator")
    n_samples = int(round(judge.length * loaded.sample_rate / judge.sample_rate))  # 1 s at its own rate
    t0 = time.perf_counter()
    clips, loglik = generate_clips(loaded.model.to(a.device), a.samples, n_samples, loaded.quantization, seed=a.seed,
                                   batch=a.batch, compile=a.compile, progress=not a.quiet)
    info = {"kind": "checkpoint", "path": storage.absolute(checkpoint), "job": loaded.job.name, "step": loaded.step,
            "sample_rate": loaded.sample_rate, "generated": a.samples, "seed": a.seed, "batch": a.batch,
            "temperature": 1.0, "generate_s": round(time.perf_counter() - t0, 3),
            "loglik_nats": {"mean": float(loglik.mean()), "min": float(loglik.min()), "max": float(loglik.max())}}
    trim = None
    if a.likelihood_trim is not None:
        low, high = a.likelihood_trim
        keep = likelihood_trim(loglik, low, high)
        clips = clips[keep]
        trim = {"low": low, "high": high, "generated": a.samples, "kept": len(keep), "convention": TRIM_CONVENTION}
    return clips, loaded.sample_rate, info, trim


def sample_from_diffusion(checkpoint: str, judge: Judge, a) -> tuple[np.ndarray, int, dict, None]:
    """--samples clips of 1 s from a diffusion checkpoint, --batch per network evaluation, over all T steps
    (ancestral) or --steps strided ones. No likelihood: --likelihood-trim is refused."""
    if a.likelihood_trim is not None:
        raise Sc09Error(f"{checkpoint}: --likelihood-trim needs each clip's log-likelihood, and a diffusion model "
                        f"gives none (the paper scores its non-autoregressive models on 2,048 clips as they are)")
    loaded = load_checkpoint(checkpoint, task="diffusion")
    n_samples = int(round(judge.length * loaded.sample_rate / judge.sample_rate))  # 1 s at its own rate
    total_pool = loaded.job.model.total_pool
    length = -(-n_samples // total_pool) * total_pool  # the net runs on multiples of its pooling; cropped after
    t0 = time.perf_counter()
    clips = sample_clips(loaded.model.to(a.device), a.samples, length, steps=a.steps, seed=a.seed, batch=a.batch,
                         schedule=Schedule.of(loaded.job.model), progress=not a.quiet)[:, :n_samples]
    info = {"kind": "checkpoint", "task": "diffusion", "path": storage.absolute(checkpoint), "job": loaded.job.name,
            "step": loaded.step, "sample_rate": loaded.sample_rate, "generated": a.samples, "seed": a.seed,
            "batch": a.batch, "sampler": sampler_description(loaded.job.model.diffusion_steps, a.steps),
            "generate_s": round(time.perf_counter() - t0, 3)}
    return clips.numpy(), loaded.sample_rate, info, None


def score_source(a, judge: Judge) -> dict:
    t0 = time.perf_counter()
    if is_checkpoint(a.source):
        clips, rate, info, trim = generate_from(a.source, judge, a)
    elif storage.isdir(a.source):
        if a.likelihood_trim is not None:
            raise Sc09Error(f"--likelihood-trim needs each clip's log-likelihood under its generator: give the "
                            f"generator checkpoint as SOURCE, not the folder {a.source}")
        (clips, info), rate, trim = read_folder(a.source, judge, not a.quiet), judge.sample_rate, None
    else:
        raise Sc09Error(f"{a.source}: neither a folder of audio clips nor a checkpoint (no state.pt)")
    seconds = {"source": time.perf_counter() - t0}
    scores = score_clips(clips, rate, judge, ALL_METRICS, seconds=seconds)
    seconds["score"] = sum(v for k, v in seconds.items() if k != "source")
    return {"source": info, "trim": trim, "samples": scores["clips"],
            "scores": {k: scores[k] for k in ALL_METRICS}, "class_counts": scores["class_counts"],
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def table(rows: dict[str, dict]) -> str:
    lines = [f"{'set':24s} {'clips':>6s} " + " ".join(f"{HEADERS[k]:>9s}" for k in ALL_METRICS)]
    for name, r in rows.items():
        lines.append(f"{name:24s} {r['clips']:6d} " + " ".join(f"{r[k]:9.4g}" for k in ALL_METRICS))
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    try:
        judge = load_judge(a.classifier, load_checkpoint, data=a.data, device=a.device, cache=not a.no_cache,
                           progress=not a.quiet)
        report = {"metrics": "sc09", "classifier": judge.describe(), "metric_notes": METRIC_NOTES}
        rows = {}
        if a.reference:
            report["reference_rows"] = reference_rows(judge, cache=not a.no_cache, progress=not a.quiet)
            rows.update({f"{split} (real)": r for split, r in report["reference_rows"].items()})
        if a.source:
            report.update(score_source(a, judge))
            rows[f"{report['source']['kind']}" + (" (trimmed)" if report["trim"] else "")] = {
                **report["scores"], "clips": report["samples"]}
    except (CheckpointError, Sc09Error, ManifestError, BadDataError, storage.StorageError) as e:
        print(f"sashimi-eval: {e}", file=sys.stderr)
        return 2
    report["total_s"] = round(time.perf_counter() - t0, 3)
    ref = judge.reference
    print(f"sashimi-eval: SC09 metrics, classifier {judge.checkpoint} (step {judge.step}); reference: "
          f"{ref.split!r} split of {ref.data} ({len(ref.labels)} clips)")
    if report.get("trim"):
        t = report["trim"]
        print(f"likelihood trim {t['low']:g},{t['high']:g}: {t['kept']} of {t['generated']} generated clips scored")
    print(table(rows))
    if a.out:
        storage.write_text(a.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0
