"""`task: diffusion` (DiffWave+SaShiMi) through the system: the job schema, examples (the raw waveform and
a noise draw fixed by the global order), the loss through the task, exact resume and TensorBoard through
the trainer (one process, no Ray), sashimi-generate on a diffusion checkpoint, and the refusals between
diffusion and autoregressive checkpoints and tools."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster import checkpoint as ck
from cluster.checkpoint import compat, store
from cluster.checkpoint.format import WrongTaskError
from cluster.config import JobConfigError, job_from_dict
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.driver.prepare import prepare
from cluster.rundir import RunDir
from cluster.tasks import DriverContext, task_of
from cluster.tasks.diffusion import level_steps, sample_clips
from cluster.tasks.examples import NoisedWaveExamples
from cluster.tools import evaluate, generate
from cluster_helpers import (REPO, assert_same_training_state, make_checkpoint, take_batches,
                             tiny_job, write_checkpoint, write_job)
from data_prep.schema import Sample, SampleError
from sashimi import DiffWaveConfig, diffusion
from sashimi.optim import make_optimizer

TINY = {"d_model": 8, "n_layers": 1, "d_state": 8, "kernel": "s4d", "t_embed_dim": 8, "t_hidden_dim": 16,
        "diffusion_steps": 20}
CROP = 256  # tiny_job's crop


def diffusion_job(shards, storage, name: str = "dw", **sections) -> dict:
    """tiny_job as a diffusion job: the tiny DiffWave model, a fixed global batch, a cheap evaluation."""
    job = tiny_job(shards, storage, name, task="diffusion", model=TINY, optim={"lr": 3e-3},
                   training={"global_batch": 2},
                   eval={"diffusion": {"noise_levels": 4, "clips": 2, "steps": 3}})
    for section, values in sections.items():
        job[section] = {**job.get(section, {}), **values} if isinstance(values, dict) else values
    return job


def _checkpoint(run_dir, shards, step: int = 3):
    """A task-diffusion checkpoint of fresh tiny weights, written by the trainer's own writer."""
    torch.manual_seed(0)
    job = job_from_dict(diffusion_job(shards, run_dir.parent), "<test>")
    net = task_of(job).build_model().eval()
    return write_checkpoint(run_dir, job, net, step, optimizer=make_optimizer(net)), net, job


# ---------------------------------------------------------------- the job schema (no Ray)

def test_shipped_diffusion_jobs(no_ray):
    full = load_job(REPO / "jobs" / "sc09-diffwave-sashimi.yaml")
    small = load_job(REPO / "jobs" / "sc09-diffwave-sashimi-small.yaml")
    quick = load_job(REPO / "jobs" / "sc09-diffwave-quick.yaml")
    # the paper's models: the library's defaults (their parameter counts are pinned in tests/sashimi/test_diffwave.py)
    assert full.model == DiffWaveConfig(l_max=16000) and small.model == DiffWaveConfig(d_model=64, l_max=16000)
    for job in (full, small, quick):
        assert job.task == "diffusion" and job.data.crop == 16000 and job.model.diffusion_steps == 200
    for job in (full, small):  # the reference's recipe: Adam 2e-4, 4 clips per GPU, 16-32 global
        assert job.optim.lr == job.optim.ssm_lr == 2e-4 and job.optim.weight_decay == 0
        assert job.training.batch_per_worker == 4 and 16 <= job.training.global_batch <= 32
        assert job.training.clip_norm is None and job.schedule.kind == "constant"
    assert not quick.scaling.use_gpu and quick.data.demo_minutes
    assert task_of(quick).build_model().num_parameters() == 1_108_865


def test_bad_crop_and_lengths_refused_naming_the_key(tmp_path, no_ray):
    def load(name, **sections):
        return load_job(write_job(tmp_path / f"{name}.yaml", diffusion_job(tmp_path, tmp_path, **sections)))

    with pytest.raises(JobConfigError, match=r"crop250\.yaml: data\.crop: .*divisible by the total pooling 16.*250"):
        load("crop250", data={"crop": 250})
    with pytest.raises(JobConfigError, match=r"cropnull\.yaml: data\.crop: .*None"):
        load("cropnull", data={"crop": None})
    with pytest.raises(JobConfigError, match=r"gen\.yaml: eval\.generate_samples: .*16.*100"):
        load("gen", eval={"generate_samples": 100})
    with pytest.raises(JobConfigError, match=r"levels\.yaml: eval\.diffusion\.noise_levels: at most model\.diff"):
        load("levels", eval={"diffusion": {"noise_levels": 21}})
    with pytest.raises(JobConfigError, match=r"task: 'regress' is not one of \['generate', 'classify', 'diffusion'\]"):
        load("task", task="regress")
    assert load("ok", data={"crop": 320}).data.crop == 320  # any multiple of 16


# ---------------------------------------------------------------- examples and the loss

def test_examples_are_the_raw_waveform_zero_padded_with_a_seeded_noise_draw():
    data = np.linspace(-0.9, 0.7, 300, dtype=np.float32)
    short = Sample("k", "audio", data, length=200, sample_rate=16000, label=None)
    ex = NoisedWaveExamples(crop=CROP, steps=20)
    x0, t, eps = ex(short, random.Random(5))
    assert x0.dtype == eps.dtype == torch.float32 and t.dtype == torch.int64 and x0.shape == eps.shape == (CROP,)
    assert torch.equal(x0[:200], torch.from_numpy(data[:200]))  # as decoded: no min-max scaling, no quantisation
    assert torch.equal(x0[200:], torch.zeros(CROP - 200))  # padded with zeros (the reference's MSE counts them)
    assert 0 <= int(t) < 20
    again = ex(short, random.Random(5))
    other = ex(short, random.Random(6))
    assert torch.equal(again[2], eps) and int(again[1]) == int(t)  # the draw is the RNG's: fixed by its seed
    assert not torch.equal(other[2], eps)
    long = Sample("k", "audio", np.linspace(-1, 1, 1000, dtype=np.float32), length=1000, sample_rate=16000, label=None)
    x0, _, _ = ex(long, random.Random(1))
    start = int(np.argmin(np.abs(long.data - x0[0].item())))  # a window of the valid prefix, unchanged
    assert torch.equal(x0, torch.from_numpy(long.data[start:start + CROP]))
    with pytest.raises(SampleError, match="'k'.*audio"):
        ex(Sample("k", "pixels", np.zeros(784, np.uint8), 784, None, 3), random.Random(0))


def test_a_clips_noise_does_not_depend_on_the_world_size(shards):
    """(x0, t, ε) of every clip come from the global order's (seed, position): rank shares of two workers
    are the one-worker batch cut in two, so the trained loss is the same at any world size."""
    urls = sorted(str(p) for p in (shards / "train").glob("*.tar"))
    ex = NoisedWaveExamples(CROP, 20)
    one = take_batches(urls, examples=ex, steps=2, global_batch=4)
    r0, r1 = (take_batches(urls, examples=ex, steps=2, global_batch=4, rank=r, world=2) for r in (0, 1))
    for k in range(2):
        for col in range(3):
            assert torch.equal(one[k][col], torch.cat([r0[k][col], r1[k][col]]))
    assert len(set(one[0][1].tolist() + one[1][1].tolist())) > 1  # steps t are drawn, not constant


def test_one_optimiser_step_through_the_task_lowers_the_loss_on_a_fixed_batch(shards, tmp_path):
    job = job_from_dict(diffusion_job(shards, tmp_path), "<test>")
    task = task_of(job)
    torch.manual_seed(0)
    model = task.build_model()
    urls = sorted(str(p) for p in (shards / "train").glob("*.tar"))
    batch = take_batches(urls, examples=task.examples(), steps=1, global_batch=4)[0]
    x0, t, eps = batch
    total, count = task.loss_sums(model, batch, contextlib.nullcontext)
    assert count.item() == 4 * CROP and task.units(batch) == CROP
    # the summed ε squared error of the closed-form noised clips, per position
    sched = diffusion.Schedule.linear(20)
    by_hand = (model(sched.noise(x0, t, eps), t) - eps).pow(2).sum()
    torch.testing.assert_close(total, by_hand, rtol=1e-6, atol=0)  # same ops, float32 sum order
    opt = make_optimizer(model, lr=3e-3)
    before = task.loss(model, batch, contextlib.nullcontext)
    before.backward()
    opt.step()
    after = task.loss(model, batch, contextlib.nullcontext)
    assert after.item() < before.item()


def test_validation_scores_every_clip_at_each_noise_level():
    assert level_steps(200, 10) == [10, 30, 50, 70, 90, 110, 130, 150, 170, 190]
    assert level_steps(20, 4) == [2, 7, 12, 17] and level_steps(20, 20) == list(range(20))
    job = job_from_dict(diffusion_job("/x", "/y"), "<test>")
    task = task_of(job)
    assert task.val_keys == ("val_loss", "val_loss_t002", "val_loss_t007", "val_loss_t012", "val_loss_t017")

    class Const(torch.nn.Module):  # ε̂ = 0: the loss at every level is the clip's mean ε²
        config = job.model

        def forward(self, x, t):
            return torch.zeros_like(x)

    eps = torch.randn(3, CROP, dtype=torch.float64).float()
    batches = [(torch.zeros(2, CROP), torch.zeros(2, dtype=torch.int64), eps[:2]),
               (torch.zeros(1, CROP), torch.zeros(1, dtype=torch.int64), eps[2:])]
    sums = task.eval_sums(Const(), batches, torch.device("cpu"), contextlib.nullcontext)
    m = task.metrics(sums.tolist())
    expected = eps.double().pow(2).mean(-1).mean().item()
    assert m["clips"] == 3 and m["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert all(m[k] == pytest.approx(expected, rel=1e-6) for k in task.val_keys[1:])


# ---------------------------------------------------------------- through the trainer

@pytest.fixture(scope="module")
def clean(tmp_path_factory, shards):
    root = tmp_path_factory.mktemp("clean")
    job = load_job(write_job(root / "clean.yaml", diffusion_job(shards, root / "runs", "clean")))
    reports = run_local(job, "clean.yaml")
    assert [r["step"] for r in reports] == [2, 4]
    return root


def test_exact_resume_of_a_diffusion_job(tmp_path, shards, clean):
    path = write_job(tmp_path / "resumed.yaml", diffusion_job(shards, tmp_path / "runs", "resumed"))
    first = run_local(load_job(path, ["training.max_steps=2"]), str(path))
    assert first[-1]["step"] == 2
    second = run_local(load_job(path), str(path))
    assert [r["step"] for r in second] == [4] and second[0]["resumed_from"] == 2
    a = ck.validate_checkpoint(ck.latest_checkpoint(clean / "runs" / "clean"))
    b = ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / "resumed"))
    assert a["step"] == b["step"] == 4
    assert_same_training_state(a, b)
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-7) and "val_loss_t017" in a["metrics"]
    start = ck.validate_checkpoint(tmp_path / "runs" / "resumed" / store.checkpoint_dir_name(2))
    assert max((a["model"][k] - start["model"][k]).abs().max().item() for k in a["model"]) > 1e-4  # it trained


def test_tensorboard_of_a_diffusion_run(clean):
    events = EventAccumulator(str(clean / "runs" / "clean" / "tensorboard"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/loss_t002", "val/loss_t017", "perf/generate_s"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val/loss")] == [2, 4]
    audio = events.Audio("generated/audio")
    assert [e.step for e in audio] == [2, 4] and audio[0].sample_rate == 16000
    # two clips of 64 samples with a 0.25 s silence between them
    assert audio[0].length_frames == 2 * 64 + 4000
    assert "generated/spectrogram" in tags["images"]


def test_a_diffusion_run_refuses_a_generate_job_and_resumes_through_a_dropout_change(tmp_path, shards, clean):
    ar = {**diffusion_job(shards, clean / "runs", "clean", task="generate"),
          "model": {"d_model": 8, "n_layers": 1, "d_state": 8, "kernel": "s4d"}}
    with pytest.raises(JobConfigError, match=r"task: checkpoint 'diffusion', job 'generate'"):
        prepare(load_job(write_job(tmp_path / "ar.yaml", ar)), "ar.yaml")
    stored = store.read_job(ck.latest_checkpoint(clean / "runs" / "clean"))
    job = job_from_dict(stored, "<stored>")
    same = dataclasses.replace(job, model=dataclasses.replace(job.model, dropout=0.1, cauchy_backend="naive"))
    assert compat.config_mismatch(stored, same.to_dict()) == []  # neither decides the weights
    for key, value in (("d_model", 16), ("diffusion_steps", 50), ("beta_end", 0.05)):
        other = dataclasses.replace(job, model=dataclasses.replace(job.model, **{key: value}))
        assert [d.split(":")[0] for d in compat.config_mismatch(stored, other.to_dict())] == [f"model.{key}"]


# ---------------------------------------------------------------- tools

def test_sashimi_generate_writes_wavs_from_a_diffusion_checkpoint(tmp_path, shards):
    ckpt, net, job = _checkpoint(tmp_path / "run", shards)
    out = tmp_path / "gen"
    args = [str(ckpt), "--samples", "3", "--batch", "2", "--steps", "4", "--seed", "1", "--quiet"]
    assert generate.main(args + ["--out", str(out)]) == 0
    rep = json.loads((out / "generation.json").read_text())
    assert rep["task"] == "diffusion" and rep["clips"] == 3 and rep["samples_per_clip"] == CROP
    assert rep["steps_visited"] == 4 and rep["diffusion_steps_T"] == 20 and rep["network_evaluations"] == 2 * 4
    expected = sample_clips(net, 3, CROP, steps=4, seed=1, batch=2)
    for i, s in enumerate(rep["samples"]):
        wav, rate = sf.read(out / s["wav"], dtype="float32")
        assert rate == 16000 and wav.shape == (CROP,)
        assert np.abs(wav - expected[i].numpy()).max() <= 1 / 32768 + 1e-7  # the sampler's clip, 16-bit PCM
        assert (out / s["spectrogram"]).is_file()
    assert generate.main(args + ["--out", str(tmp_path / "again")]) == 0
    for name in ("sample_0000.wav", "sample_0002.wav"):  # the seed decides every clip
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    full = tmp_path / "full"
    assert generate.main([str(ckpt), "--seconds", "0.008", "--seed", "0", "--quiet", "--out", str(full)]) == 0
    rep = json.loads((full / "generation.json").read_text())
    assert rep["steps_visited"] == 20 and rep["sampler"].startswith("ancestral") and rep["samples_per_clip"] == 128


def test_the_closing_wav_of_a_diffusion_run(tmp_path, shards):
    ckpt, _, job = _checkpoint(tmp_path / "runs" / "dw", shards, step=4)
    run_dir = RunDir(str(tmp_path / "runs" / "dw"))
    lines = task_of(job).after_training(DriverContext(job=job, run_dir=run_dir, metrics={"step": 4, "val_loss": 0.5},
                                                      checkpoint_dir=str(ckpt), load_checkpoint=ck.load_checkpoint,
                                                      write_wav=True))
    wav, rate = sf.read(run_dir.sample_wav(4))
    assert rate == 16000 and wav.shape == (64,) and "final val loss: 0.50000" in lines[0]


def test_diffusion_and_autoregressive_checkpoints_refused_by_the_other_tools(tmp_path, shards, capsys):
    diff, _, _ = _checkpoint(tmp_path / "diff", shards)
    ar, _, _ = make_checkpoint(tmp_path / "ar")
    with pytest.raises(WrongTaskError, match=rf"{diff}.*task 'diffusion' checkpoint.*not a 'generate' one.*DiffWave"):
        ck.load_checkpoint(diff)
    with pytest.raises(WrongTaskError, match=rf"{ar}.*task 'generate' checkpoint.*not a 'diffusion' one.*autoregr"):
        ck.load_checkpoint(ar, task="diffusion")
    assert evaluate.main([str(diff), "--data", str(shards), "--split", "val", "--quiet"]) == 2  # NLL: none to score
    assert f"{diff}" in capsys.readouterr().err
    assert generate.main([str(ar), "--steps", "5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{ar}" in err and "--steps" in err and "diffusion" in err
    assert generate.main([str(diff), "--temperature", "0.9", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{diff}" in err and "--temperature" in err and "autoregressive" in err
    assert generate.main([str(diff), "--seconds", "0.0012", "--out", str(tmp_path / "o")]) == 2
    assert "--seconds 0.0012" in capsys.readouterr().err
    assert generate.main([str(ar), "--out", str(tmp_path / "o")]) == 2
    assert "--seconds is required" in capsys.readouterr().err
