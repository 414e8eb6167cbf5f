"""`task: classify` through sashimi-train: the S4 classifier on sequential-MNIST shards that sashimi-prep
builds from small synthetic IDX files (label c: a bright column band at 2c+4, grey level 100+15c, so a
tiny model learns it in a few dozen steps). Labelled data streams, classifier checkpoints refused by the
generative tools, and real Ray Train runs (1 worker here; 2-worker DDP + exact resume is slow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import compat, format as fmt, store
from cluster.config import JobConfigError, job_from_dict
from cluster.train.data import val_batches
from cluster.driver.jobs import load_job
from cluster.tasks import task_of
from cluster.tasks.examples import TokenExamples
from cluster_helpers import REPO, make_checkpoint, take_batches, write_checkpoint, write_job, write_mnist_idx
from data_prep.cli import main as prep_main
from data_prep.manifest import shard_paths

N_TRAIN, N_TEST, N_VAL = 200, 50, 40
TINY = {"d_model": 16, "n_layers": 1, "d_state": 8, "kernel": "s4d", "ff": 0, "l_max": 784}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    sets = write_mnist_idx(root / "idx", n_train=N_TRAIN, n_test=N_TEST)
    assert prep_main(["mnist", str(root / "idx"), str(root / "shards"), "--val-count", str(N_VAL), "--quiet"]) == 0
    return root / "shards", sets


def classify_job(shards: Path, storage: Path, name: str = "cls", **sections) -> dict:
    job = {
        "name": name, "task": "classify", "seed": 0,
        "data": {"shards": str(shards), "quantization": "none", "crop": None},
        "model": dict(TINY),
        "optim": {"lr": 3e-2, "weight_decay": 0.0, "ssm_lr": 1e-3},
        "schedule": {"kind": "constant"},
        "training": {"max_steps": 40, "batch_per_worker": 8},
        "scaling": {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1}, "torch_threads": 2},
        "checkpoint": {"every": 20, "keep": 5, "storage": str(storage)},
        "failure": {"max_failures": 0},
        "eval": {"every": 20, "val_batches": 2, "val_batch_size": 20, "generate_samples": 0},
        "logging": {"every": 10},
    }
    for section, values in sections.items():
        job[section] = {**job.get(section, {}), **values} if isinstance(values, dict) else values
    return job


def _classifier_checkpoint(path: Path, shards: Path) -> Path:
    """A task-classify checkpoint written with the trainer's own writer (fresh weights, no Ray)."""
    job = job_from_dict(classify_job(shards, path.parent), "<test>")
    return write_checkpoint(path, job, task_of(job).build_model(), step=3, sample_rate=None)


# ---------------------------------------------------------------- job validation (no Ray)

def test_shipped_classify_job(no_ray):
    job = load_job(REPO / "jobs" / "smnist-classify.yaml")
    assert job.task == "classify" and job.data.quantization == "none" and job.data.crop is None
    assert job.model.l_max == 784 and job.eval.generate_samples == 0
    assert job.scaling.num_workers * job.training.batch_per_worker == 50


def test_classify_job_errors_name_file_and_key(tmp_path, no_ray):
    bad = write_job(tmp_path / "bad.yaml", classify_job(tmp_path, tmp_path, task="regress"))
    with pytest.raises(JobConfigError, match=r"bad\.yaml: task: 'regress' is not one of \['generate', 'classify', 'diffusion'\]"):
        load_job(bad)
    bad = write_job(tmp_path / "bad2.yaml", classify_job(tmp_path, tmp_path, model={"d_modle": 16}))
    with pytest.raises(JobConfigError, match=r"bad2\.yaml: .*d_modle"):
        load_job(bad)


def test_sashimi_train_takes_classify_jobs_and_checks_data_first(tmp_path, capsys, no_ray):
    """No longer refused: it goes to the trainer, whose driver-side checks still run before Ray starts."""
    from cluster.driver.cli import main

    assert main([str(REPO / "jobs" / "smnist-classify.yaml"), f"data.shards={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "smnist-classify.yaml" in err and "data.shards" in err and "nowhere" in err


def test_test_split_falls_back_to_val(mnist, tmp_path):
    from cluster.driver.prepare import test_split_of

    shards, _ = mnist
    job = load_job(write_job(tmp_path / "j.yaml", classify_job(shards, tmp_path)))
    val = shard_paths(shards, "val")
    m = json.loads((shards / "manifest.json").read_text())
    assert test_split_of(job, m, val, "j") == ("test", shard_paths(shards, "test"))
    del m["splits"]["test"]
    assert test_split_of(job, m, val, "j") == ("val", val)
    with pytest.raises(JobConfigError, match="neither a test split"):
        test_split_of(job, m, [], "j")


# ---------------------------------------------------------------- labelled data streams

def test_train_stream_carries_the_right_labels_and_is_reproducible(mnist):
    shards, sets = mnist
    urls = shard_paths(shards, "train")
    kw = dict(steps=3, global_batch=4, examples=TokenExamples(None, "none", 10))
    a, b = take_batches(urls, **kw), take_batches(urls, threads=2, **kw)
    assert len(a) == 3
    for (ta, ma, la), (tb, mb, lb) in zip(a, b):
        assert ta.shape == (4, 784) and ma.all() and la.shape == (4,) and la.dtype == torch.int64
        assert torch.equal(ta, tb) and torch.equal(la, lb)
        for tok, lab in zip(ta, la):  # the label is the one its pixels encode (band at column 2c+4)
            img = tok.reshape(28, 28)
            assert int(img[0, 2 * lab + 4]) == 100 + 15 * int(lab)
    plain = take_batches(urls, **{**kw, "examples": TokenExamples(None, "none")})[0]
    assert len(plain) == 2 and torch.equal(plain[0], a[0][0])  # generative batches are unchanged


def test_val_batches_with_labels_in_shard_order(mnist):
    shards, sets = mnist
    out = val_batches(shard_paths(shards, "test"), n_batches=10, batch_size=20, examples=TokenExamples(None, "none", 10))
    assert [len(b[2]) for b in out] == [20, 20, 10]  # whole split, short last batch
    x, y = sets["t10k"]
    assert np.array_equal(torch.cat([b[2] for b in out]).numpy(), y)
    assert np.array_equal(torch.cat([b[0] for b in out]).numpy(), x.reshape(-1, 784))


def test_label_out_of_range_is_a_bad_sample(mnist):
    from data_prep.reader import BadDataError

    shards, _ = mnist
    urls = shard_paths(shards, "test")
    with pytest.raises(BadDataError, match=r"label \d is not in 0\.\.1"):
        val_batches(urls, n_batches=1, batch_size=4, examples=TokenExamples(None, "none", 2), on_bad_sample="stop")
    kept = val_batches(urls, n_batches=100, batch_size=100, examples=TokenExamples(None, "none", 2))
    assert set(kept[0][2].tolist()) <= {0, 1}


# ---------------------------------------------------------------- checkpoints of the other task

def test_generative_tools_refuse_a_classifier_checkpoint(mnist, tmp_path, capsys):
    from cluster.tools.evaluate import main as eval_main
    from cluster.tools.generate import main as gen_main

    shards, _ = mnist
    ckpt = _classifier_checkpoint(tmp_path / "run", shards)
    assert gen_main([str(ckpt), "--seconds", "0.01", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "'classify'" in err and "classify-eval" in err
    assert eval_main([str(ckpt), "--data", str(shards), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "'classify'" in err
    with pytest.raises(fmt.WrongTaskError, match=str(ckpt)):
        ck.load_checkpoint(ckpt)


def test_classify_eval_scores_a_checkpoint_and_refuses_others(mnist, tmp_path, capsys):
    from cluster.tools.mnist_demo import main

    shards, sets = mnist
    ckpt = _classifier_checkpoint(tmp_path / "ck", shards)
    out = tmp_path / "acc.json"
    assert main(["classify-eval", str(ckpt), "--data", str(shards), "--batch", "16", "--out", str(out),
                 "--quiet"]) == 0
    res = json.loads(out.read_text())
    model = ck.load_checkpoint(ckpt, task="classify").model
    x, y = sets["t10k"]
    with torch.no_grad():
        pred = model(torch.from_numpy(x.reshape(-1, 784).astype(np.int64))).argmax(-1).numpy()
    assert res["examples"] == N_TEST and res["accuracy"] == pytest.approx(float((pred == y).mean()))
    gen, _, _ = make_checkpoint(tmp_path / "gen")
    assert main(["classify-eval", str(gen), "--data", str(shards)]) == 2
    assert "'generate'" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["classify-eval", str(tmp_path / "junk.pt"), "--data", str(shards)]) == 2
    assert "junk.pt" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_the_other_task():
    gen = {"task": "generate", "model": dict(TINY), "data": {"quantization": "none"}}
    assert compat.config_mismatch(gen, {**gen, "task": "classify"}) == ["task: checkpoint 'generate', job 'classify'"]
    old = {k: v for k, v in gen.items() if k != "task"}  # written before jobs had a task
    assert compat.config_mismatch(old, gen) == []


# ---------------------------------------------------------------- real Ray Train runs

def _read_tb(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "audio": 0}).Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}, acc.Tags()


def test_sashimi_train_classify_run_reports_test_accuracy(mnist, tmp_path, capsys):
    """The CLI path end to end on 1 CPU worker: trains, checkpoints (task classify), scores the whole test
    split, writes test_result.json, logs test/accuracy; and the trivially learnable labels are learned."""
    from cluster.driver.cli import main
    from cluster.tools.mnist_demo import main as demo_main

    shards, sets = mnist
    path = write_job(tmp_path / "cls.yaml", classify_job(shards, tmp_path / "runs"))
    assert main([str(path), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "cls"
    res = json.loads((run_dir / "test_result.json").read_text())
    assert res["task"] == "classify" and res["split"] == "test" and res["step"] == 40
    assert res["examples"] == N_TEST and 0 <= res["accuracy"] <= 1
    driver = [line for line in out.splitlines() if line.startswith("[sashimi] test accuracy")]  # not a worker's
    assert len(driver) == 1 and f"test accuracy {res['accuracy']:.4f} on {N_TEST} digits" in driver[0], out
    assert res["accuracy"] >= 0.6, res  # chance is 0.1: labels and loss reach the model
    latest = ck.latest_checkpoint(run_dir)
    state = ck.validate_checkpoint(latest)
    assert state["step"] == 40 and fmt.job_of(state)["task"] == "classify"
    assert set(state["metrics"]) == {"val_loss", "val_accuracy"}
    scalars, tags = _read_tb(run_dir)
    assert [s for s, _ in scalars["val/accuracy"]] == [20, 40] and "val/loss" in scalars
    assert "train/loss" in scalars and "train/loss_bits" not in scalars and "val/nll_bits" not in scalars
    assert scalars["test/accuracy"] == [(40, pytest.approx(res["accuracy"]))]
    assert not tags["images"] and not tags["audio"]  # no generation for a classifier
    acc = tmp_path / "acc.json"
    assert demo_main(["classify-eval", str(latest), "--data", str(shards), "--out", str(acc), "--quiet"]) == 0
    assert json.loads(acc.read_text())["accuracy"] == pytest.approx(res["accuracy"])


@pytest.mark.slow
def test_two_worker_classify_resume_is_exact(mnist, tmp_path):
    """2-worker DDP: 6 steps straight == 4 steps, then resumed to 6 (same data, RNG, optimiser)."""
    import ray

    from cluster.driver.connect import local_ray_init_kwargs
    from cluster.driver.launch import run

    shards, _ = mnist
    sections = {"scaling": {"num_workers": 2}, "training": {"max_steps": 6, "batch_per_worker": 4},
                "checkpoint": {"every": 2}, "eval": {"every": 2}, "schedule": {"kind": "plateau", "patience": 0}}
    started = not ray.is_initialized()
    if started:
        ray.init(**local_ray_init_kwargs(2))
    try:
        def go(name, overrides=()):
            path = write_job(tmp_path / f"{name}.yaml", classify_job(shards, tmp_path / "runs", name, **sections))
            return run(load_job(path, list(overrides)), str(path))

        straight = go("straight")
        assert go("resumed", ["training.max_steps=4"]).metrics["step"] == 4
        second = go("resumed")
    finally:
        if started:
            ray.shutdown()
    assert second.metrics["resumed_from"] == 4 and second.metrics["step"] == 6
    results = [json.loads((tmp_path / "runs" / n / "test_result.json").read_text()) for n in ("straight", "resumed")]
    assert [(r["step"], r["examples"]) for r in results] == [(6, N_TEST), (6, N_TEST)]
    assert results[0]["accuracy"] == pytest.approx(results[1]["accuracy"])
    a, b = store.load_state(straight.checkpoint_dir), store.load_state(second.checkpoint_dir)
    assert a["data"]["world_size"] == 2 and len(a["rng"]["per_rank"]) == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)
    assert a["metrics"]["val_loss"] == pytest.approx(b["metrics"]["val_loss"], abs=1e-6)
