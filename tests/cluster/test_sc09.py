"""Judging samples the way the paper does, through our own tools: the digit classifier trained by
sashimi-train's loop (task classify with model.arch) on a synthetic tones corpus in the SC09 layout,
`sashimi-eval --metrics sc09` on a folder (local and in a bucket), on a generator checkpoint (with the
likelihood trim) and on the real splits (--reference, cached), the training-time hook
(eval.sc09_metrics -> samples/* in TensorBoard), and the refusals of bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cluster import checkpoint as ck
from cluster import sc09
from cluster.checkpoint import compat
from cluster.config import JobConfigError, job_from_dict
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.tasks import task_of
from cluster.tasks.examples import WaveExamples
from cluster_helpers import REPO, assert_same_training_state, make_checkpoint, take_batches, write_job
from data_prep import digits, storage
from data_prep.labelled import read_labelled_split
from data_prep.manifest import shard_paths
from data_prep.schema import Sample, SampleError
from data_prep.shard import shard_folder
from sashimi import sample_metrics
from sashimi.digit_classifier import DigitClassifier

CLASSIFIER = {"arch": "conv", "channels": [8, 16, 32]}


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """200 tone 'digits' (20 per class; held-out speakers: 168 train, 11 val, 21 test), sc09 preset."""
    root = tmp_path_factory.mktemp("tones")
    digits.make_digit_corpus(root / "src", per_digit=20, engine="tones", seed=0, progress=False)
    shard_folder(root / "src", root / "shards", "sc09", seed=0, progress=False)
    return root / "shards"


def classifier_job(shards: Path, storage_dir: Path, name: str = "digits", **sections) -> dict:
    job = {
        "name": name, "task": "classify", "seed": 0,
        "data": {"shards": str(shards), "loader_workers": 0, "augment": {"max_shift_s": 0.05}},
        "model": dict(CLASSIFIER),
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "schedule": {"kind": "constant"},
        "training": {"max_steps": 40, "batch_per_worker": 24, "label_smoothing": 0.05},
        "scaling": {"num_workers": 1, "torch_threads": 2},
        "checkpoint": {"every": 20, "keep": 2, "storage": str(storage_dir)},
        "failure": {"max_failures": 0},
        "eval": {"every": 20, "val_batches": 1, "val_batch_size": 32, "generate_samples": 0},
        "logging": {"every": 10},
    }
    for section, values in sections.items():
        job[section] = {**job.get(section, {}), **values} if isinstance(values, dict) else values
    return job


def _train(tmp_path: Path, job: dict, overrides=()) -> list[dict]:
    path = write_job(tmp_path / f"{job['name']}.yaml", job)
    return run_local(load_job(path, list(overrides)), str(path))


@pytest.fixture(scope="module")
def classifier(tones, tmp_path_factory) -> Path:
    """A digit classifier trained by sashimi-train's loop for 40 steps (its newest checkpoint)."""
    root = tmp_path_factory.mktemp("classifier")
    _train(root, classifier_job(tones, root / "runs"))
    return Path(ck.latest_checkpoint(root / "runs" / "digits"))


def _wav_folder(folder: Path, clips: np.ndarray, rate: int = 16000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clips):
        sf.write(folder / f"clip_{i:03d}.wav", c, rate, subtype="FLOAT")
    return folder


def _eval(args: list[str]) -> int:
    from cluster.tools.evaluate import main

    return main(["--metrics", "sc09", *args, "--quiet"])


# ---------------------------------------------------------------- the classifier job

def test_classifier_trained_by_sashimi_train_learns_the_tones(classifier, tones):
    """Chance is 0.1; the held-out speakers' clips are recognised (this run: 1.0 on 21 clips)."""
    res = json.loads((classifier.parent / "test_result.json").read_text())
    assert res["step"] == 40 and res["examples"] == 21 and res["split"] == "test"
    assert res["accuracy"] >= 0.7, res
    loaded = ck.load_checkpoint(classifier, task="classify")
    assert isinstance(loaded.model, DigitClassifier) and loaded.job.data.augment.max_shift_s == 0.05
    x, y = read_labelled_split(tones, "test")  # the test result is the model's own accuracy on those clips
    _, probs, labels = sc09.classify_split(loaded.model, str(tones), "test")
    assert np.array_equal(labels, y)
    assert float((probs.argmax(1) == y).mean()) == pytest.approx(res["accuracy"])


def test_wave_examples_are_the_decoded_clip_padded_with_a_seed():
    ex = WaveExamples(length=8, sample_rate=16000, n_labels=10)
    data = np.array([0.5, -0.25, 0.125, 0.0, 0.0], dtype=np.float32)
    s = Sample(key="k", kind="audio", data=data, length=3, sample_rate=16000, label=7, meta={})
    import random

    wave, seed, label = ex(s, random.Random(5))
    assert wave.tolist() == [0.5, -0.25, 0.125, 0, 0, 0, 0, 0] and int(label) == 7  # no scaling, no quantisation
    assert int(seed) == random.Random(5).getrandbits(63)
    with pytest.raises(SampleError, match="8000 Hz audio, the digit classifier reads 16000 Hz"):
        ex(Sample("k", "audio", data, 3, 8000, 7, {}), random.Random(0))
    with pytest.raises(SampleError, match=r"label 10 is not in 0\.\.9"):
        ex(Sample("k", "audio", data, 3, 16000, 10, {}), random.Random(0))


def test_augmented_training_resumes_exactly(tones, tmp_path):
    """Each example's augmentation is drawn from its own seed (a function of its place in the global order):
    4 steps straight equal 2 steps, a stop, and 2 more (weights, BatchNorm statistics, optimiser moments)."""
    sections = dict(training={"max_steps": 4, "batch_per_worker": 16},
                    checkpoint={"every": 2, "keep": 5}, eval={"every": 2})
    _train(tmp_path, classifier_job(tones, tmp_path / "runs", "straight", **sections))
    _train(tmp_path, classifier_job(tones, tmp_path / "runs", "resumed", **sections), ["training.max_steps=2"])
    again = _train(tmp_path, classifier_job(tones, tmp_path / "runs", "resumed", **sections))
    assert again[0]["resumed_from"] == 2
    a, b = (ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / n)) for n in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4
    assert_same_training_state(a, b)


def test_train_stream_seeds_do_not_depend_on_the_world_size(tones):
    urls = shard_paths(tones, "train")
    ex = WaveExamples(16000, 16000, 10)
    whole = take_batches(urls, examples=ex, steps=2, global_batch=6)
    halves = [take_batches(urls, examples=ex, steps=2, global_batch=6, rank=r, world=2) for r in (0, 1)]
    for step in range(2):
        joined = [torch.cat([halves[r][step][i] for r in (0, 1)]) for i in range(3)]
        for got, want in zip(joined, whole[step]):
            assert torch.equal(got, want)


def test_job_options_are_validated_naming_the_key(tones, tmp_path, no_ray):
    base = classifier_job(tones, tmp_path)
    assert job_from_dict(base).data.augment.max_shift_s == 0.05 and job_from_dict(base).training.label_smoothing == 0.05
    bad = {**base, "data": {**base["data"], "augment": {"snr_db_min": 30.0, "snr_db_max": 10.0}}}
    with pytest.raises(JobConfigError, match=r"<job>: data\.augment: .*snr_db_min"):
        job_from_dict(bad)
    with pytest.raises(JobConfigError, match=r"data\.augment\.shfit"):
        job_from_dict({**base, "data": {**base["data"], "augment": {"shfit": 1}}})
    with pytest.raises(JobConfigError, match=r"training\.label_smoothing: must be in \[0, 1\)"):
        job_from_dict({**base, "training": {"label_smoothing": 1.0}})
    gen = {"name": "g", "data": {"augment": {}}}
    with pytest.raises(JobConfigError, match=r"data\.augment: waveform augmentation is for the digit classifier"):
        job_from_dict(gen)
    with pytest.raises(JobConfigError, match=r"training\.label_smoothing: only task classify"):
        job_from_dict({"name": "g", "training": {"label_smoothing": 0.1}})
    with pytest.raises(JobConfigError, match=r"eval\.sc09_metrics: scores generated audio clips; task 'classify'"):
        job_from_dict({**base, "eval": {"sc09_metrics": {"classifier": "x"}}})


def test_resume_compares_the_classifiers_weight_keys(tones, tmp_path):
    job = job_from_dict(classifier_job(tones, tmp_path)).to_dict()
    other = lambda **m: {**job, "model": {**job["model"], **m}}  # noqa: E731
    assert compat.config_mismatch(job, other(dropout=0.3)) == []  # dropout does not shape the weights
    assert compat.config_mismatch(job, other(d_model=7)) == []  # read by the S4 archs only
    assert compat.config_mismatch(job, other(channels=[8, 16])) == ["model.channels: checkpoint [8, 16, 32], job [8, 16]"]
    assert compat.config_mismatch(job, other(hop=256)) == ["model.hop: checkpoint 512, job 256"]


def test_a_dataset_at_another_rate_is_refused_before_training(tones, tmp_path, no_ray):
    from cluster.driver.prepare import prepare

    path = write_job(tmp_path / "j.yaml", classifier_job(tones, tmp_path, model={**CLASSIFIER, "sample_rate": 8000}))
    with pytest.raises(JobConfigError, match=r"j\.yaml: model\.sample_rate: 8000 Hz, but the clips of data\.shards .* "
                                             r"are 16000 Hz"):
        prepare(load_job(path), str(path))


def test_shipped_classifier_job(no_ray):
    job = load_job(REPO / "jobs" / "sc09-classifier.yaml")
    assert job.task == "classify" and job.model.arch == "conv" and job.data.augment is not None
    assert isinstance(task_of(job).build_model(), DigitClassifier)


# ---------------------------------------------------------------- sashimi-eval --metrics sc09

def test_folder_scores_as_score_clips_does_and_reports_bad_files(classifier, tones, tmp_path, capsys):
    x, _ = read_labelled_split(tones, "test")
    folder = _wav_folder(tmp_path / "clips", x)
    sf.write(folder / "slow.wav", x[0][::2], 8000, subtype="FLOAT")  # another rate: resampled to 16 kHz
    sf.write(folder / "short.wav", x[1][:8000], 16000, subtype="FLOAT")  # half a second: zero-padded
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "r.json"
    assert _eval(["--classifier", str(classifier), str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable file(s): broken.wav" in printed
    assert printed.count("2 of 23 clips were not 1 s at 16000 Hz") == 1
    r = json.loads(out.read_text())
    assert r["metrics"] == "sc09" and r["samples"] == 23 and r["trim"] is None
    assert r["source"]["kind"] == "folder" and r["source"]["files"] == 24 and r["source"]["scored_files"] == 23
    assert [u["file"] for u in r["source"]["unreadable"]] == ["broken.wav"] and r["source"]["conformed"] == 2
    assert r["classifier"]["checkpoint"] == str(classifier) and r["classifier"]["reference"]["split"] == "train"
    assert r["classifier"]["reference"]["clips"] == 168 and r["classifier"]["reference"]["data"] == str(tones)
    assert set(r["scores"]) == set(sample_metrics.METRICS) and sum(r["class_counts"]) == 23
    # the same numbers as score_clips on the same clips (the files in sorted order: clip_*, short, slow)
    judge = sc09.load_judge(str(classifier), ck.load_checkpoint)
    clips = [*x, sc09.conform(x[1][:8000], 16000, 16000, 16000)[0], sc09.conform(x[0][::2], 8000, 16000, 16000)[0]]
    want = sc09.score_clips(np.stack(clips), 16000, judge)
    for k in sample_metrics.METRICS:
        assert r["scores"][k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), k
    assert sc09.score_clips(torch.from_numpy(np.stack(clips)), 16000, judge) == want  # a tensor: the same
    # real clips judged against the train split score far better than white noise judged by the same classifier
    noise = np.clip(0.3 * np.random.default_rng(0).normal(size=(len(clips), 16000)), -1, 1).astype(np.float32)
    floor = sc09.score_clips(noise, 16000, judge)
    assert r["scores"]["is"] > 2 * floor["is"] and r["scores"]["am"] < floor["am"] / 2
    assert r["scores"]["fid"] < floor["fid"] / 5


def test_reference_rows_are_computed_once_and_cached(classifier, tones, monkeypatch, tmp_path):
    out = tmp_path / "ref.json"
    assert _eval(["--classifier", str(classifier), "--reference", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["reference_rows"]
    assert set(rows) == {"train", "test"} and rows["train"]["clips"] == 168 and rows["test"]["clips"] == 21
    assert abs(rows["train"]["fid"]) < 1e-6 and rows["train"]["ndb"] == 0.0  # the reference against itself
    assert rows["test"]["fid"] > rows["train"]["fid"] and 0 <= rows["test"]["accuracy"] <= 1
    cached = sorted(p.name for p in classifier.iterdir() if p.name.startswith("sc09_"))
    assert len(cached) == 2 and cached[0].startswith("sc09_features_") and cached[1].startswith("sc09_reference_")

    def no_classifying(*a, **k):
        raise AssertionError("the cached reference was computed again")

    monkeypatch.setattr(sc09, "classify_split", no_classifying)
    again = tmp_path / "again.json"
    assert _eval(["--classifier", str(classifier), "--reference", "--out", str(again)]) == 0
    assert json.loads(again.read_text())["reference_rows"] == rows


def test_a_bucket_folder_gives_the_local_numbers(classifier, tones, tmp_path, s3_bucket):
    x, _ = read_labelled_split(tones, "test")
    folder = _wav_folder(tmp_path / "clips", x[:12])
    for f in sorted(folder.iterdir()):
        storage.put_file(f, f"{s3_bucket}/samples/{f.name}")
    local, remote = tmp_path / "local.json", tmp_path / "remote.json"
    assert _eval(["--classifier", str(classifier), str(folder), "--out", str(local)]) == 0
    assert _eval(["--classifier", str(classifier), f"{s3_bucket}/samples", "--out", f"{s3_bucket}/r.json"]) == 0
    a, b = json.loads(local.read_text()), json.loads(storage.read_text(f"{s3_bucket}/r.json"))
    assert b["samples"] == a["samples"] == 12 and b["source"]["path"] == f"{s3_bucket}/samples"
    assert b["scores"] == a["scores"] and b["class_counts"] == a["class_counts"]


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    """A tiny untrained SaShiMi whose data was 1 kHz: 1 s is 1,000 steps (the judge resamples to 16 kHz)."""
    path, _, _ = make_checkpoint(tmp_path_factory.mktemp("gen"), sample_rate=1000)
    return path


def test_generator_checkpoint_with_the_likelihood_trim(classifier, generator, tmp_path):
    out = tmp_path / "trimmed.json"
    assert _eval(["--classifier", str(classifier), str(generator), "--samples", "20", "--batch", "20", "--eager",
                  "--likelihood-trim", "0.4,0.95", "--out", str(out)]) == 0
    t = json.loads(out.read_text())
    assert t["source"]["kind"] == "checkpoint" and t["source"]["sample_rate"] == 1000 and t["source"]["step"] == 7
    assert t["source"]["generated"] == t["trim"]["generated"] == 20 and t["source"]["seed"] == 0
    assert t["trim"]["kept"] == t["samples"] == 11  # sorted positions floor(0.4 * 20) = 8 to floor(0.95 * 20) = 19
    assert (t["trim"]["low"], t["trim"]["high"]) == (0.4, 0.95) and "random half" in t["trim"]["convention"]
    assert set(t["scores"]) == set(sample_metrics.METRICS) and all(np.isfinite(v) for v in t["scores"].values())
    assert sum(t["class_counts"]) == 11


def test_diffusion_checkpoint_as_source_samples_its_schedule(classifier, generator, tmp_path):
    """A DiffWave+SaShiMi checkpoint as SOURCE: --samples clips of 1 s (its rate; the net runs on a multiple of
    its pooling, cropped after) from --steps strided steps, scored as score_clips scores those very clips."""
    from cluster.config import job_from_dict as job_of_dict
    from cluster.tasks.diffusion import sample_clips
    from cluster_helpers import tiny_job, write_checkpoint
    from sashimi.diffusion import Schedule

    job = job_of_dict(tiny_job(tmp_path / "no-shards", tmp_path, "dw", task="diffusion", model=TINY_DIFFWAVE,
                               training={"global_batch": 2}), "<test>")
    torch.manual_seed(0)
    net = task_of(job).build_model().eval()
    with torch.no_grad():  # the head is zero-initialised: give the clips something of the net's own
        net.head[-1].weight.normal_(0, 0.5)
    ckpt = write_checkpoint(tmp_path / "dw", job, net, step=5, sample_rate=1000)
    out = tmp_path / "dw.json"
    assert _eval(["--classifier", str(classifier), str(ckpt), "--samples", "12", "--batch", "5", "--steps", "2",
                  "--seed", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["source"]["task"] == "diffusion" and r["source"]["step"] == 5 and r["samples"] == 12
    assert r["source"]["sampler"] == "strided schedule of 2 of the 20 steps, DDIM update with eta 1.0"
    assert r["trim"] is None
    # 1 s at 1 kHz = 1000 samples, generated as 1008 (pooling 16) and cropped
    clips = sample_clips(net, 12, 1008, steps=2, seed=3, batch=5, schedule=Schedule.of(job.model))[:, :1000]
    judge = sc09.load_judge(str(classifier), ck.load_checkpoint)
    want = sc09.score_clips(clips, 1000, judge)
    for k in sample_metrics.METRICS:
        assert r["scores"][k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k
    # no likelihood to trim by; --steps means nothing to an autoregressive checkpoint
    assert _eval(["--classifier", str(classifier), str(ckpt), "--likelihood-trim", "0.4,0.95"]) == 2
    assert _eval(["--classifier", str(classifier), str(generator), "--steps", "2"]) == 2


def test_bad_classifiers_and_sources_are_refused_naming_the_file(classifier, generator, tones, tmp_path, capsys):
    assert _eval(["--classifier", str(generator), "--reference"]) == 2  # a generator as the judge
    err = capsys.readouterr().err
    assert str(generator) in err and "not a 'classify' one" in err
    from cluster_helpers import write_checkpoint

    smnist = job_from_dict({"name": "s", "task": "classify", "data": {"quantization": "none", "crop": None},
                            "model": {"d_model": 8, "n_layers": 1, "d_state": 8, "kernel": "s4d", "l_max": 784}})
    s4 = write_checkpoint(tmp_path / "s4", smnist, task_of(smnist).build_model(), step=1, sample_rate=None)
    assert _eval(["--classifier", str(s4), "--reference"]) == 2  # a classifier, but not of digits' audio
    err = capsys.readouterr().err
    assert str(s4) in err and "not a digit classifier" in err
    x, _ = read_labelled_split(tones, "test")
    few = _wav_folder(tmp_path / "few", x[:9])
    assert _eval(["--classifier", str(classifier), str(few)]) == 2
    err = capsys.readouterr().err
    assert str(few) in err and "9 readable audio clip(s)" in err and "fewer than the classifier's 10 classes" in err
    assert _eval(["--classifier", str(classifier), str(few), "--likelihood-trim", "0.4,0.95"]) == 2
    assert "give the generator checkpoint as SOURCE" in capsys.readouterr().err
    assert _eval(["--classifier", str(classifier), str(tmp_path / "nowhere")]) == 2
    assert "nowhere: neither a folder" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert _eval(["--classifier", str(tmp_path / "junk.pt"), "--reference"]) == 2
    assert "junk.pt" in capsys.readouterr().err


# ---------------------------------------------------------------- during training

# a tiny DiffWave+SaShiMi (task diffusion: its clips come from a 3-step strided schedule)
TINY_DIFFWAVE = {"d_model": 8, "n_layers": 1, "d_state": 8, "kernel": "s4d", "t_embed_dim": 8, "t_hidden_dim": 16,
                 "diffusion_steps": 20}


@pytest.mark.parametrize("task", ["generate", "diffusion"])
def test_generator_job_logs_sample_metrics_at_each_evaluation(classifier, tmp_path, task):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster_helpers import tiny_job

    src, shards = tmp_path / "src", tmp_path / "shards"
    from data_prep.demo import make_demo_corpus

    make_demo_corpus(src, minutes=0.2, seed=0)
    shard_folder(src, shards, "generic", sample_rate=2000, clip_seconds=1.0, seed=0, progress=False)
    sc09_metrics = {"classifier": str(classifier), "samples": 10}
    if task == "generate":
        job = tiny_job(shards, tmp_path / "runs", "gen", training={"max_steps": 2}, data={"crop": 256},
                       eval={"every": 1, "generate_samples": 0, "sc09_metrics": sc09_metrics})
    else:
        job = tiny_job(shards, tmp_path / "runs", "gen", task="diffusion", model=TINY_DIFFWAVE,
                       training={"max_steps": 2, "global_batch": 2}, data={"crop": 256},
                       eval={"every": 1, "generate_samples": 0, "sc09_metrics": sc09_metrics,
                             "diffusion": {"noise_levels": 2, "clips": 5, "metrics_steps": 3}})
    path = write_job(tmp_path / "gen.yaml", job)
    run_local(load_job(path), str(path))
    acc = EventAccumulator(str(tmp_path / "runs" / "gen" / "tensorboard")).Reload()
    for tag in ("samples/fid", "samples/is", "samples/mis", "samples/am"):
        values = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in values] == [1, 2] and all(np.isfinite(v) for _, v in values), tag
    assert 1 <= min(v.value for v in acc.Scalars("samples/is")) <= 10  # IS lies between 1 and the class count
    assert "perf/sc09_generate_s" in acc.Tags()["scalars"]


def test_a_generator_job_with_a_wrong_judge_is_refused_before_ray(generator, tmp_path, no_ray):
    from cluster.driver.prepare import check_sc09_classifier

    job = job_from_dict({"name": "g", "eval": {"sc09_metrics": {"classifier": str(generator)}}})
    with pytest.raises(JobConfigError, match=r"eval\.sc09_metrics\.classifier: .* is not a digit classifier"):
        check_sc09_classifier(job, "<job>")
    job = job_from_dict({"name": "g", "eval": {"sc09_metrics": {"classifier": str(tmp_path / "none")}}})
    with pytest.raises(JobConfigError, match=r"eval\.sc09_metrics\.classifier: .*none.*missing"):
        check_sc09_classifier(job, "<job>")
