"""Checkpoint format versions and load_checkpoint, the one loader every tool uses: a checkpoint of an
older format (made before the U-Net wiring changed) never loads silently, and every failure names
the file."""
from __future__ import annotations

import json
import os

import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import format as fmt, store
from cluster.config import JobConfig, JobConfigError
from cluster.tools.evaluate import main as eval_main
from cluster.tools.generate import main as gen_main
from cluster.driver.jobs import load_job
from cluster.tools.mnist_demo import main as demo_main
from cluster.driver.prepare import prepare
from cluster_helpers import TINY, make_checkpoint, make_demo_shards, tiny_job, write_job
from data_prep.atomicio import atomic_write


def _rewrite(ckpt_dir, **changes):
    """Rewrite a checkpoint's payload in place (bypassing the writer's checks)."""
    state = torch.load(ckpt_dir / fmt.STATE_FILE, weights_only=True)
    state.update(changes)
    atomic_write(ckpt_dir / fmt.STATE_FILE, lambda f: torch.save(state, f))
    return ckpt_dir


def _as_written_before_job_json(ckpt_dir, **changes):
    """A checkpoint as an older release wrote it: its payload (rewritten with `changes`), no job.json."""
    (ckpt_dir / fmt.JOB_FILE).unlink()
    return _rewrite(ckpt_dir, **changes)


def test_an_older_format_is_refused_naming_the_file_and_why(tmp_path, capsys):
    old = _as_written_before_job_json(make_checkpoint(tmp_path)[0], format_version=1)
    file = old / fmt.STATE_FILE
    with pytest.raises(fmt.FormatVersionError) as e:
        ck.load_checkpoint(old)
    msg = str(e.value)
    assert f"checkpoint {file} has format version 1; this version reads {fmt.FORMAT_VERSION}" in msg
    assert "U-Net wiring changed" in msg and "retrain" in msg
    for validate in (ck.validate_checkpoint, store.load_state):
        with pytest.raises(fmt.FormatVersionError, match="format version 1"):
            validate(old)
    assert gen_main([str(old), "--seconds", "0.01", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(file) in err and "format version 1" in err
    # resuming a run whose checkpoints are all of the old format: none is usable
    with pytest.raises(ck.CheckpointError, match=r"no valid checkpoint.*format version 1"):
        store.resolve_resume(old, tmp_path)


def test_a_newer_or_missing_format_is_refused(tmp_path):
    newer = _rewrite(make_checkpoint(tmp_path / "n")[0], format_version=fmt.FORMAT_VERSION + 1)
    with pytest.raises(fmt.FormatVersionError, match="newer release"):
        ck.load_checkpoint(newer)
    state = torch.load(newer / fmt.STATE_FILE, weights_only=True)
    del state["format_version"]
    atomic_write(newer / fmt.STATE_FILE, lambda f: torch.save(state, f))
    with pytest.raises(fmt.FormatVersionError, match="format version None"):
        ck.validate_checkpoint(newer)


def test_a_run_with_old_format_checkpoints_fails_before_ray(tmp_path, no_ray):
    shards = make_demo_shards(tmp_path / "data", minutes=0.1)
    path = write_job(tmp_path / "j.yaml", tiny_job(shards, tmp_path / "runs", "old"))
    job = load_job(path)
    ckpt, _, _ = make_checkpoint(tmp_path / "runs" / "old", step=2, model=job.model.to_dict())
    _as_written_before_job_json(ckpt, format_version=1)  # no job.json: the driver reads state.pt
    with pytest.raises(JobConfigError, match=r"j\.yaml: run .*old.*format version 1.*--fresh"):
        prepare(load_job(path), str(path))
    prepare(load_job(path), str(path), fresh=True)  # --fresh deletes the old run


def test_the_driver_checks_job_json_not_the_weights(tmp_path, no_ray, monkeypatch):
    """prepare() fits a run's checkpoints to the job from their job.json (kilobytes), never torch.load-ing
    a state.pt; a newer format version in job.json is refused before Ray as the payload's would be."""
    shards = make_demo_shards(tmp_path / "data", minutes=0.1)
    path = write_job(tmp_path / "j.yaml", tiny_job(shards, tmp_path / "runs", "jj"))
    job = load_job(path)
    ckpt, _, _ = make_checkpoint(tmp_path / "runs" / "jj", step=2, model=job.model.to_dict(), name="jj")

    def no_loading(*a, **k):
        raise AssertionError("the driver loaded a checkpoint's weights")

    monkeypatch.setattr(torch, "load", no_loading)
    prepare(load_job(path), str(path))
    with pytest.raises(JobConfigError, match=r"model\.d_model: checkpoint 16, job 8"):
        prepare(load_job(path, ["model.d_model=8"]), str(path))
    record = json.loads((ckpt / fmt.JOB_FILE).read_text())
    assert record["step"] == 2 and record["format_version"] == fmt.FORMAT_VERSION and record["job"]["name"] == "jj"
    (ckpt / fmt.JOB_FILE).write_text(json.dumps({**record, "format_version": fmt.FORMAT_VERSION + 1}))
    with pytest.raises(JobConfigError, match="newer release"):
        prepare(load_job(path), str(path))


def test_load_checkpoint_gives_model_job_quantization_rate_step(tmp_path):
    ckpt, net, job = make_checkpoint(tmp_path / "ck", quantization="linear", sample_rate=8000)
    loaded = ck.load_checkpoint(ckpt)
    model, job_cfg, quant, rate, step = loaded
    assert isinstance(job_cfg, JobConfig) and job_cfg.to_dict() == job and job_cfg.model.d_model == TINY["d_model"]
    assert (quant, rate, step) == ("linear", 8000, 7) and not model.training
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert ck.load_checkpoint(ckpt / fmt.STATE_FILE).step == 7  # the file itself works too


def test_load_checkpoint_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(ck.CheckpointError, match="nope"):
        ck.load_checkpoint(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / fmt.STATE_FILE).write_bytes(b"junk")
    with pytest.raises(ck.CheckpointError, match=r"junk/state\.pt: unreadable"):
        ck.load_checkpoint(junk)
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    other = make_checkpoint(tmp_path / "other", model={**TINY, "d_model": 16})[0]
    _rewrite(ckpt, model=torch.load(other / fmt.STATE_FILE, weights_only=True)["model"])
    file = str(ckpt / fmt.STATE_FILE)
    with pytest.raises(ck.CheckpointError, match=f"{file}: weights do not fit the stored model config"):
        ck.load_checkpoint(ckpt)
    # every tool turns these into one line naming the file, exit code 2
    for tool in (lambda p: gen_main([str(p), "--seconds", "0.01", "--out", str(tmp_path / "o")]),
                 lambda p: eval_main([str(p), "--data", str(tmp_path), "--quiet"]),
                 lambda p: demo_main(["complete", str(p), "--data", str(tmp_path)])):
        assert tool(ckpt) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and file in err and "do not fit" in err


def test_prune_keeps_the_newest_and_copy_is_whole(tmp_path):
    run = tmp_path / "run"
    src, _, _ = make_checkpoint(tmp_path / "tmp", step=7)
    for step in (2, 4, 6):
        make_checkpoint(run, step=step)
    copied = store.copy_checkpoint_dir(src, run)
    assert copied == str(run / store.checkpoint_dir_name(7)) and ck.validate_checkpoint(copied)["step"] == 7
    assert [store.name_of(d) for d in store.prune(run, 2)] == [store.checkpoint_dir_name(2), store.checkpoint_dir_name(4)]
    assert [store.name_of(d) for d in ck.list_checkpoints(run)] == [store.checkpoint_dir_name(6), store.checkpoint_dir_name(7)]
    assert sorted(os.listdir(copied)) == [fmt.JOB_FILE, fmt.STATE_FILE]  # no temp file left
