"""The reference rows of the SC09 sample-quality table for one digit classifier, and what scoring costs.

    python bench/sc09_reference_rows.py CLASSIFIER /tmp/digits-shards [--out rows.json]

CLASSIFIER: a checkpoint directory of jobs/sc09-classifier.yaml, or a .pt of bench/sc09_classifier_candidates.py.

Rows (reference set = the train split, as the paper's script): ``train`` scored against itself, ``test``
(the ceiling a model can reach with this classifier), and two floors to show each metric's range: the test
clips buried in white noise at 0 dB SNR, and pure white noise. Then the time to score 2,048 clips (the
paper's count for non-autoregressive models): classifier forward, then each metric against the cached
train features, all in this process, one after another.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_prep.labelled import read_labelled_split  # noqa: E402
from sashimi import sample_metrics as sm  # noqa: E402
from sashimi.digit_classifier import DigitClassifier, classify_clips  # noqa: E402


def load(path: str) -> DigitClassifier:
    """A .pt of the candidates script, or a checkpoint directory of sashimi-train (jobs/sc09-classifier.yaml)."""
    if Path(path).is_dir():
        from cluster.checkpoint import load_checkpoint

        return load_checkpoint(path, task="classify").model.eval()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier.from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("classifier", help="a .pt written by bench/sc09_classifier_candidates.py --save-dir, or a sashimi-train "
                    "checkpoint directory of jobs/sc09-classifier.yaml")
    ap.add_argument("shards", help="the sc09-preset dataset it was trained on")
    ap.add_argument("--score-clips", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows and timings as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.classifier)
    (xtr, ytr), (xte, yte) = (read_labelled_split(args.shards, s) for s in ("train", "test"))
    ftr, ptr = classify_clips(model, xtr)
    fte, pte = classify_clips(model, xte)
    rng = np.random.default_rng(0)
    rms = np.sqrt((xte ** 2).mean(1, keepdims=True))
    noisy = np.clip(xte + rms * rng.normal(size=xte.shape), -1, 1).astype(np.float32)
    white = np.clip(0.3 * rng.normal(size=xte.shape), -1, 1).astype(np.float32)
    sets = {"train": (ftr, ptr, ytr), "test": (fte, pte, yte), "test + noise 0 dB": (*classify_clips(model, noisy), yte),
            "white noise": (*classify_clips(model, white), None)}
    rows = {}
    for name, (f, p, y) in sets.items():
        row = sm.all_metrics(ftr, ptr, f, p)
        row["clips"] = len(p)
        row["accuracy"] = None if y is None else float((p.argmax(1) == y).mean())
        rows[name] = row

    n = min(args.score_clips, len(xtr))
    clips = xtr[:n]
    t0 = time.perf_counter()
    f, p = classify_clips(model, clips)
    timing = {"classifier": time.perf_counter() - t0}
    sm.all_metrics(ftr, ptr, f, p, seconds=timing)
    timing["total"] = time.perf_counter() - t0

    print(f"classifier {args.classifier}: {sum(q.numel() for q in model.parameters()):,} parameters; "
          f"reference = train split ({len(xtr)} clips)")
    print(f"{'set':18s} {'clips':>6s} {'acc':>7s} {'FID':>8s} {'IS':>6s} {'IS(s4)':>7s} {'mIS':>8s} {'AM':>6s} {'NDB':>5s}")
    for name, r in rows.items():
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(f"{name:18s} {r['clips']:6d} {acc:>7s} {r['fid']:8.3f} {r['is']:6.3f} {r['is_s4']:7.3f} {r['mis']:8.3f} "
              f"{r['am']:6.3f} {r['ndb']:5.2f}")
    print(f"scoring {n} clips ({args.threads} threads): " + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"classifier": args.classifier, "shards": args.shards, "rows": rows,
                                              "score_clips": n, "seconds": timing}, indent=2))


if __name__ == "__main__":
    main()
