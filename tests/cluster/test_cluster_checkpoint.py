"""Checkpoint format versions and load_checkpoint, the one loader every tool uses: a checkpoint of an
older format (made before the U-Net wiring changed) never loads silently, and every failure names
the file."""
from __future__ import annotations

import os

import pytest
import torch

from cluster import checkpoint as ck
from cluster.config import JobConfig, JobConfigError
from cluster.evaluate import main as eval_main
from cluster.generate_cli import main as gen_main
from cluster.jobs import load_job
from cluster.mnist_demo import main as demo_main
from cluster.prepare import prepare
from cluster_helpers import TINY, make_checkpoint, make_demo_shards, tiny_job, write_job
from data_prep.atomicio import atomic_write


def _rewrite(ckpt_dir, **changes):
    """Rewrite a checkpoint's payload in place (bypassing the writer's checks)."""
    state = torch.load(ckpt_dir / ck.STATE_FILE, weights_only=True)
    state.update(changes)
    atomic_write(ckpt_dir / ck.STATE_FILE, lambda f: torch.save(state, f))
    return ckpt_dir


def test_an_older_format_is_refused_naming_the_file_and_why(tmp_path, capsys):
    old = _rewrite(make_checkpoint(tmp_path / ck.checkpoint_dir_name(7))[0], format_version=1)
    file = old / ck.STATE_FILE
    with pytest.raises(ck.FormatVersionError) as e:
        ck.load_checkpoint(old)
    msg = str(e.value)
    assert f"checkpoint {file} has format version 1; this version reads {ck.FORMAT_VERSION}" in msg
    assert "U-Net wiring changed" in msg and "retrain" in msg
    for validate in (ck.validate_checkpoint, ck.load_state):
        with pytest.raises(ck.FormatVersionError, match="format version 1"):
            validate(old)
    assert gen_main([str(old), "--seconds", "0.01", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(file) in err and "format version 1" in err
    # resuming a run whose checkpoints are all of the old format: none is usable
    with pytest.raises(ck.CheckpointError, match=r"no valid checkpoint.*format version 1"):
        ck.resolve_resume(old, tmp_path, log=lambda m: None)


def test_a_newer_or_missing_format_is_refused(tmp_path):
    newer = _rewrite(make_checkpoint(tmp_path / "n")[0], format_version=ck.FORMAT_VERSION + 1)
    with pytest.raises(ck.FormatVersionError, match="newer release"):
        ck.load_checkpoint(newer)
    state = torch.load(newer / ck.STATE_FILE, weights_only=True)
    del state["format_version"]
    atomic_write(newer / ck.STATE_FILE, lambda f: torch.save(state, f))
    with pytest.raises(ck.FormatVersionError, match="format version None"):
        ck.validate_checkpoint(newer)


def test_a_run_with_old_format_checkpoints_fails_before_ray(tmp_path, no_ray):
    shards = make_demo_shards(tmp_path / "data", minutes=0.1)
    path = write_job(tmp_path / "j.yaml", tiny_job(shards, tmp_path / "runs", "old"))
    job = load_job(path)
    ckpt, _, _ = make_checkpoint(tmp_path / "runs" / "old" / ck.checkpoint_dir_name(2), model=job.model.to_dict())
    _rewrite(ckpt, format_version=1)
    with pytest.raises(JobConfigError, match=r"j\.yaml: run .*old.*format version 1.*--fresh"):
        prepare(load_job(path), str(path))
    prepare(load_job(path), str(path), fresh=True)  # --fresh deletes the old run


def test_load_checkpoint_gives_model_job_quantization_rate_step(tmp_path):
    ckpt, net, job = make_checkpoint(tmp_path / "ck", quantization="linear", sample_rate=8000)
    loaded = ck.load_checkpoint(ckpt)
    model, job_cfg, quant, rate, step = loaded
    assert isinstance(job_cfg, JobConfig) and job_cfg.to_dict() == job and job_cfg.model.d_model == TINY["d_model"]
    assert (quant, rate, step) == ("linear", 8000, 7) and not model.training
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert ck.load_checkpoint(ckpt / ck.STATE_FILE).step == 7  # the file itself works too


def test_load_checkpoint_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(ck.CheckpointError, match="nope"):
        ck.load_checkpoint(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / ck.STATE_FILE).write_bytes(b"junk")
    with pytest.raises(ck.CheckpointError, match=r"junk/state\.pt: unreadable"):
        ck.load_checkpoint(junk)
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    other = make_checkpoint(tmp_path / "other", model={**TINY, "d_model": 16})[0]
    _rewrite(ckpt, model=torch.load(other / ck.STATE_FILE, weights_only=True)["model"])
    with pytest.raises(ck.CheckpointError, match=r"ck/state\.pt: weights do not fit the stored model config"):
        ck.load_checkpoint(ckpt)
    # every tool turns these into one line naming the file, exit code 2
    for tool in (lambda p: gen_main([str(p), "--seconds", "0.01", "--out", str(tmp_path / "o")]),
                 lambda p: eval_main([str(p), "--data", str(tmp_path), "--quiet"]),
                 lambda p: demo_main(["complete", str(p), "--data", str(tmp_path)])):
        assert tool(ckpt) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "ck/state.pt" in err and "do not fit" in err


def test_prune_keeps_the_newest_and_copy_is_whole(tmp_path):
    run = tmp_path / "run"
    src, _, _ = make_checkpoint(tmp_path / "tmp" / ck.checkpoint_dir_name(7))
    for step in (2, 4, 6):
        make_checkpoint(run / ck.checkpoint_dir_name(step))
    copied = ck.copy_checkpoint_dir(src, run)
    assert copied == str(run / ck.checkpoint_dir_name(7)) and ck.validate_checkpoint(copied)["step"] == 7
    assert [ck.name_of(d) for d in ck.prune(run, 2)] == [ck.checkpoint_dir_name(2), ck.checkpoint_dir_name(4)]
    assert [ck.name_of(d) for d in ck.list_checkpoints(run)] == [ck.checkpoint_dir_name(6), ck.checkpoint_dir_name(7)]
    assert sorted(os.listdir(copied)) == [ck.STATE_FILE]  # no temp file left
