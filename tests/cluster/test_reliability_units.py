"""Reliability and security without Ray: torn/hostile checkpoints, non-finite steps and weights, bad
shards and samples, hostile shard members, unsafe YAML, config drift, loopback-only servers."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import compat, format as fmt, store
from cluster.config import JobConfigError, job_from_dict
from cluster.driver import connect, launch, summary
from cluster.train.data import val_batches
from data_prep.index import scan_shard
from data_prep.reader import BadDataError, BadSamplePolicy
from cluster.driver.jobs import load_job
from cluster.driver.prepare import prepare
from cluster.train.schedule import LRSchedule
from cluster.train.trainer import GRAD_NONFINITE, LOSS_NONFINITE, STEP_OK, step_verdict
from data_prep.atomicio import atomic_write
from cluster.tasks.examples import TokenExamples
from cluster_helpers import spawn_ranks, take_batches, tiny_job, write_checkpoint, write_job
from data_prep.manifest import shard_paths
from data_prep.schema import SampleError, decode_sample


# ---------------------------------------------------------------- helpers

X_JOB = job_from_dict({"name": "x", "data": {"shards": "/nonexistent"}, "model": {"d_model": 8},
                       "checkpoint": {"keep": 100}}, "<test>")


def _save(run: Path, step: int, job=X_JOB, weight=None, suffix: str = "") -> Path:
    """A small model (AdamW moments and the LR schedule included) saved at `step` into `run` by the
    trainer's checkpoint manager; `weight` replaces its weight first."""
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    if weight is not None:
        with torch.no_grad():
            model.weight.copy_(weight)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    manager = ck.CheckpointManager(job, str(run), model=model, optimizer=opt, schedule=LRSchedule(opt, "constant", 10),
                                   state=ck.TrainState(step=step), sample_rate=16000)
    manager.suffix = suffix
    return Path(manager.save())


def _run_dir(tmp_path, steps=(2, 4, 6)) -> Path:
    run = tmp_path / "run"
    for s in steps:
        _save(run, s)
    return run


class Evil:
    """Unpickling this runs Path.touch(marker): the side effect proves code would have executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# ---------------------------------------------------------------- torn checkpoints

@pytest.mark.parametrize("damage", ["truncate", "delete_file", "zero_bytes", "garbage"])
def test_torn_newest_checkpoint_falls_back_to_newest_valid(tmp_path, damage, cluster_log):
    run = _run_dir(tmp_path)
    newest = run / store.checkpoint_dir_name(6)
    f = newest / fmt.STATE_FILE
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "delete_file":
        f.unlink()
    elif damage == "zero_bytes":
        f.write_bytes(b"")
    else:
        f.write_bytes(os.urandom(2000))
    lines = cluster_log
    state, used, problems = store.resolve_resume(newest, run)
    assert used == str(run / store.checkpoint_dir_name(4)) and state["step"] == 4
    assert len(problems) == 1 and str(newest) in problems[0]
    assert any("invalid" in ln and str(newest) in ln for ln in lines)
    assert any("falling back" in ln and store.checkpoint_dir_name(4) in ln for ln in lines)
    with pytest.raises(ck.CheckpointError, match=store.checkpoint_dir_name(6)):
        ck.validate_checkpoint(newest)


def test_fallback_skips_several_and_fails_clearly_when_none_is_valid(tmp_path):
    run = _run_dir(tmp_path)
    for s in (6, 4):
        (run / store.checkpoint_dir_name(s) / fmt.STATE_FILE).write_bytes(b"PK\x03\x04torn")
    state, used, problems = store.resolve_resume(run / store.checkpoint_dir_name(6), run)
    assert state["step"] == 2 and len(problems) == 2
    (run / store.checkpoint_dir_name(2) / fmt.STATE_FILE).unlink()
    with pytest.raises(ck.CheckpointError, match=r"no valid checkpoint.*--fresh") as e:
        store.resolve_resume(run / store.checkpoint_dir_name(6), run)
    for s in (2, 4, 6):
        assert store.checkpoint_dir_name(s) in str(e.value)


def test_valid_candidate_is_used_unless_storage_has_a_newer_complete_one(tmp_path, cluster_log):
    run = _run_dir(tmp_path)
    lines = cluster_log
    state, used, problems = store.resolve_resume(run / store.checkpoint_dir_name(6), run)
    assert store.name_of(used) == store.checkpoint_dir_name(6) and state["step"] == 6 and problems == [] and lines == []
    # a worker SIGKILLed just after checkpoint 6 was persisted: Ray only registered 4 (or nothing)
    state, used, problems = store.resolve_resume(run / store.checkpoint_dir_name(4), run)
    assert state["step"] == 6 and problems == [] and "newer than the one Ray registered" in lines[-1]
    state, used, problems = store.resolve_resume(None, run)
    assert state["step"] == 6 and "Ray offered no checkpoint" in lines[-1]
    n = len(lines)
    state, used, problems = store.resolve_resume(None, run, registry=None)  # one process: nothing is offered
    assert state["step"] == 6 and len(lines) == n  # and nothing to say about an offer
    assert store.resolve_resume(None, tmp_path / "empty") == (None, None, [])


def test_suffixed_checkpoint_after_fallback_sorts_after_torn_one(tmp_path):
    run = _run_dir(tmp_path, steps=(2, 4))
    (run / store.checkpoint_dir_name(4) / fmt.STATE_FILE).write_bytes(b"")
    _save(run, 4, suffix="r123")
    assert [store.name_of(d) for d in ck.list_checkpoints(run)][-1] == store.checkpoint_dir_name(4, "r123")
    assert store.step_of_dir(run / store.checkpoint_dir_name(4, "r123")) == 4
    assert store.step_of_dir(run / "tensorboard") is None


class RayLikeRegistry:
    """What Ray Train's checkpoint manager does with reported checkpoints, in one process: it copies each
    into the run dir, registers it (unless the attempt "dies" between the copy and the registration),
    keeps the `keep` newest it registered and deletes the rest; it offers the newest registered."""

    def __init__(self, run: Path, keep: int):
        self.run, self.keep, self.registered, self.dying = run, keep, [], False

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:
            return
        copied = store.copy_checkpoint_dir(checkpoint_dir, self.run)
        if self.dying:
            return
        self.registered.append(copied)
        for old in self.registered[:-self.keep]:
            shutil.rmtree(old)
        self.registered = self.registered[-self.keep:]

    def offered(self) -> str | None:
        return self.registered[-1] if self.registered else None


def test_checkpoints_the_registry_never_registered_are_pruned_across_attempts(tmp_path, cluster_log):
    """A node lost while checkpoints 4 and 6 were copied but not yet registered (the S3 node-loss test
    found them left in the bucket); the next attempt resumes from 6 and dies after 8; the third must
    still prune 4 and 6 (their names travel in checkpoint 8), and never delete what the registry holds."""
    run, keep = tmp_path / "run", 3
    job = dataclasses.replace(X_JOB, checkpoint=dataclasses.replace(X_JOB.checkpoint, keep=keep))
    registry = RayLikeRegistry(run, keep)

    def attempt(offered, steps, dying_after=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        manager = ck.CheckpointManager(job, str(run), model=model, state=ck.TrainState(), sample_rate=16000,
                                       report=registry.report, registry="Ray")
        manager.load(offered)
        for step in steps:
            manager.state.step = step
            registry.dying = dying_after is not None and step > dying_after
            manager.save()
            assert all(os.path.isdir(d) for d in registry.registered)  # nothing the registry holds was deleted
        return manager

    def kept():
        return [store.step_of_dir(d) for d in ck.list_checkpoints(run)]

    attempt(None, (2, 4, 6), dying_after=2)
    assert kept() == [2, 4, 6] and [store.step_of_dir(d) for d in registry.registered] == [2]
    second = attempt(registry.offered(), (8,))
    assert second.resumed_from == 6 and second.unregistered == [store.checkpoint_dir_name(s) for s in (4, 6)]
    assert kept() == [2, 4, 6, 8]  # 4 and 6 are still among the newest 3 of the run dir
    third = attempt(registry.offered(), (10, 12))
    assert third.resumed_from == 8 and third.unregistered == []
    assert kept() == [8, 10, 12], kept()  # checkpoint.keep, whoever registered what
    assert any("never registered" in line for line in cluster_log)


def test_atomic_save_leaves_old_file_intact_on_crash(tmp_path, monkeypatch):
    d = _save(tmp_path, 2)
    before = (d / fmt.STATE_FILE).read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, weight=torch.ones(2, 3))  # the same step written again, killed mid-write
    monkeypatch.undo()
    assert (d / fmt.STATE_FILE).read_bytes() == before and ck.validate_checkpoint(d)["step"] == 2
    assert sorted(p.name for p in d.iterdir()) == [fmt.JOB_FILE, fmt.STATE_FILE]  # no temp file left


# ---------------------------------------------------------------- non-finite weights

def test_save_refuses_nonfinite_weights_and_writes_nothing(tmp_path, monkeypatch):
    w = torch.zeros(2, 3)
    w[0, 1] = float("nan")
    with pytest.raises(fmt.NonFiniteCheckpointError, match=r"non-finite at step 2 \(weight\); refusing to save"):
        _save(tmp_path / "c", 2, weight=w)
    assert not (tmp_path / "c").exists()
    real = torch.optim.AdamW.state_dict

    def inf_moment(self):  # finite weights, an Inf optimiser moment: the writer's own check refuses it
        s = real(self)
        s["state"][0]["exp_avg_sq"][0, 0] = float("inf")
        return s

    monkeypatch.setattr(torch.optim.AdamW, "state_dict", inf_moment)
    with pytest.raises(fmt.NonFiniteCheckpointError, match=r"refusing to save.*optimizer\.state\[0\]\.exp_avg_sq"):
        _save(tmp_path / "c", 2)
    assert not (tmp_path / "c" / store.checkpoint_dir_name(2) / fmt.STATE_FILE).exists()
    monkeypatch.undo()
    assert ck.validate_checkpoint(_save(tmp_path / "c", 2))["step"] == 2  # finite: saved


def test_checkpoint_with_nonfinite_weights_is_not_resumed_from(tmp_path):
    run = _run_dir(tmp_path, steps=(2, 4))
    bad = store.load_state(run / store.checkpoint_dir_name(4))
    bad["model"]["bias"][0] = float("inf")
    atomic_write(run / store.checkpoint_dir_name(4) / fmt.STATE_FILE, lambda f: torch.save(bad, f))  # no save check
    state, used, problems = store.resolve_resume(run / store.checkpoint_dir_name(4), run)
    assert state["step"] == 2 and "non-finite" in problems[0] and "model.bias" in problems[0]


def _verdict(loss, grad_norm, world=1):
    return step_verdict(torch.tensor(loss), torch.tensor(grad_norm), world)


def test_nonfinite_step_flag():
    assert _verdict(float("nan"), 1.0) == _verdict(float("-inf"), float("nan")) == LOSS_NONFINITE
    assert _verdict(1.0, float("inf")) == GRAD_NONFINITE and _verdict(3.2, 0.5) == STEP_OK


def _agree_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # only rank 1 sees a NaN loss (and only rank 0 an Inf gradient): every rank must reach the same
        # verdict, the loss taking precedence, and a finite step must not be skipped
        decisions = [_verdict(float("nan") if rank == 1 else 1.0, float("inf") if rank == 0 else 1.0, world),
                     _verdict(1.0, float("inf") if rank == 1 else 1.0, world), _verdict(1.0, 1.0, world)]
        Path(out, f"r{rank}").write_text(repr(decisions))
    finally:
        dist.destroy_process_group()


def test_all_ranks_agree_to_skip_a_step_only_one_rank_saw_as_nonfinite(tmp_path):
    spawn_ranks(_agree_worker, 2, str(tmp_path))
    want = repr([LOSS_NONFINITE, GRAD_NONFINITE, STEP_OK])
    assert [(tmp_path / f"r{r}").read_text() for r in (0, 1)] == [want, want]


# ---------------------------------------------------------------- hostile checkpoints

def test_checkpoint_with_pickled_code_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    d = _save(tmp_path, 2)
    payload = {**store.load_state(d), "evil": Evil(marker)}
    torch.save(payload, d / fmt.STATE_FILE)  # plain pickle: the kind of file an attacker would plant
    with pytest.raises(Exception, match="(?i)weights only|unsupported global|not allowed"):
        store.load_state(d)
    with pytest.raises(ck.CheckpointError, match=fmt.STATE_FILE):
        ck.validate_checkpoint(d)
    with pytest.raises(ck.CheckpointError, match=fmt.STATE_FILE):
        ck.load_checkpoint(d)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(d / fmt.STATE_FILE, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------- config drift

def test_config_mismatch_names_the_keys():
    job = {"name": "j", "model": {"d_model": 16, "n_layers": 1}, "data": {"quantization": "mu-law"}}
    same_spelled_out = {"name": "j", "model": {"d_model": 16, "n_layers": 1, "pool": [4, 4]},
                        "data": {"quantization": "mu-law"}}
    from sashimi.config import SaShiMiConfig

    if list(SaShiMiConfig().pool) == [4, 4]:
        assert compat.config_mismatch(job, same_spelled_out) == []
    other = {"name": "j", "model": {"d_model": 8, "n_layers": 1}, "data": {"quantization": "linear"}}
    diff = compat.config_mismatch(job, other)
    assert diff == ["model.d_model: checkpoint 16, job 8", "data.quantization: checkpoint 'mu-law', job 'linear'"]
    with pytest.raises(compat.CheckpointMismatchError, match=r"model\.d_model: checkpoint 16, job 8"):
        compat.check_compatible(job, other, "/runs/j/checkpoint_step000000002")


def test_resuming_with_changed_model_fails_before_ray(tmp_path, shards, no_ray):
    storage = tmp_path / "runs"
    path = write_job(tmp_path / "j.yaml", tiny_job(shards, storage, "drift"))
    _save(storage / "drift", 2, job=load_job(path))
    prepare(load_job(path), str(path))  # same config: fine
    with pytest.raises(JobConfigError, match=r"j\.yaml.*model\.d_model: checkpoint 16, job 8.*--fresh"):
        prepare(load_job(path, ["model.d_model=8"]), str(path))
    from cluster.driver import cli

    assert cli.main([str(path), "model.d_model=8"]) == 2
    prepare(load_job(path, ["model.d_model=8"]), str(path), fresh=True)  # --fresh: allowed
    assert not (storage / "drift").exists()


# ---------------------------------------------------------------- bad job inputs (beyond test_cluster_config)

BAD_JOBS = [
    ("on_bad_sample enum", {"data": {"on_bad_sample": "ignore"}}, "data.on_bad_sample"),
    ("max_nonfinite_steps zero", {"training": {"max_nonfinite_steps": 0}}, "training.max_nonfinite_steps"),
    ("negative workers", {"scaling": {"num_workers": -2}}, "scaling.num_workers"),
    ("workers as text", {"scaling": {"num_workers": "two"}}, "scaling.num_workers"),
    ("checkpoint every zero", {"checkpoint": {"every": 0}}, "checkpoint.every"),
    ("unknown checkpoint key", {"checkpoint": {"evry": 3}}, "checkpoint.evry"),
]


@pytest.mark.parametrize("what,patch,key", BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_more_bad_jobs_fail_before_ray(tmp_path, what, patch, key, no_ray):
    job = tiny_job(tmp_path / "shards", tmp_path / "runs", **patch)
    path = write_job(tmp_path / "bad.yaml", job)
    with pytest.raises(JobConfigError) as e:
        load_job(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_manifest_listing_a_missing_shard_fails_before_ray(tmp_path, shards, no_ray):
    data = tmp_path / "data"
    shutil.copytree(shards, data)
    victim = shard_paths(data, "train")[0]
    Path(victim).unlink()
    path = write_job(tmp_path / "j.yaml", tiny_job(data, tmp_path / "runs"))
    with pytest.raises(JobConfigError, match=r"missing shard.*" + Path(victim).name):
        prepare(load_job(path), str(path))


def test_yaml_python_tags_are_rejected_and_not_executed(tmp_path, no_ray):
    marker = tmp_path / "pwned"
    text = (f"name: !!python/object/apply:os.system ['touch {marker}']\n"
            f"training: {{max_steps: 1}}\n")
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(JobConfigError, match=r"evil\.yaml: invalid YAML.*python/object/apply"):
        load_job(path)
    good = write_job(tmp_path / "good.yaml", tiny_job(tmp_path, tmp_path))
    with pytest.raises(JobConfigError, match="not valid YAML"):
        load_job(good, [f"name=!!python/object/apply:os.system ['touch {marker}']"])
    from cluster.driver import cli

    assert cli.main([str(path)]) == 2
    assert not marker.exists()


# ---------------------------------------------------------------- bad shards and samples

def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _members_of(shard: str, n: int) -> dict[str, bytes]:
    """The first n samples (all their members) of a real shard."""
    out, keys = {}, []
    with tarfile.open(shard) as t:
        for m in t.getmembers():
            key = m.name.split(".", 1)[0]
            if key not in keys:
                if len(keys) == n:
                    break
                keys.append(key)
            out[m.name] = t.extractfile(m).read()
    return out


MU_LAW_256 = TokenExamples(crop=256, quantization="mu-law")


def _take(urls, **kw):
    return take_batches(urls, examples=MU_LAW_256, **{"steps": 6, **kw})


@pytest.fixture
def bad_dir(tmp_path, shards):
    """A good shard, a truncated copy of it, and a shard whose second sample lacks its flac member."""
    good = shard_paths(shards, "train")[0]
    d = tmp_path / "bad"
    d.mkdir()
    trunc = d / "truncated.tar"
    raw = Path(good).read_bytes()
    trunc.write_bytes(raw[: len(raw) // 3 + 700])  # cut mid-member
    members = _members_of(good, 3)
    keys = sorted({n.split(".", 1)[0] for n in members})
    missing = {n: v for n, v in members.items() if n != f"{keys[1]}.flac"}
    return {"good": good, "truncated": str(trunc), "missing": str(_tar(d / "missing-key.tar", missing)),
            "missing_key": keys[1]}


def test_truncated_shard_is_skipped_and_named(bad_dir, capfd):
    # the truncated copy keeps the manifest's count of the whole shard: its intact prefix is read, the
    # clips past the break are skipped and named, and every step still yields its batch
    n = len(scan_shard(bad_dir["good"]))
    batches = _take([bad_dir["truncated"]], counts=[n], steps=n, on_bad_sample="skip")
    kept = [b for b in batches if b]  # a step whose clips were all bad trains on a zero-weight stand-in
    assert len(batches) == n and kept and all(t.shape[1] == 256 for t, _ in kept)
    assert sum(t.shape[0] for t, _ in kept) < 2 * n  # some clips were left out
    err = capfd.readouterr().err
    assert "truncated.tar" in err and "skipping" in err


def test_truncated_shard_stops_when_configured(bad_dir):
    n = len(scan_shard(bad_dir["good"]))
    with pytest.raises(BadDataError, match=r"truncated\.tar.*on_bad_sample=stop"):
        _take([bad_dir["truncated"]], counts=[n], steps=n, on_bad_sample="stop")


def test_sample_with_missing_member_skipped_or_stopped(bad_dir, capfd):
    assert len(_take([bad_dir["missing"]], on_bad_sample="skip", steps=3)) == 3
    err = capfd.readouterr().err
    assert "missing-key.tar" in err and bad_dir["missing_key"] in err and "missing 'flac'" in err
    with pytest.raises(BadDataError, match=r"missing-key\.tar.*missing 'flac'"):
        _take([bad_dir["missing"]], on_bad_sample="stop")


def test_val_reader_skips_bad_shards_too(bad_dir):
    out = val_batches([bad_dir["truncated"], bad_dir["missing"]], n_batches=2, batch_size=1, examples=MU_LAW_256)
    assert len(out) == 2
    with pytest.raises(BadDataError, match="truncated.tar"):
        val_batches([bad_dir["truncated"]], n_batches=50, batch_size=1, examples=MU_LAW_256,
                    on_bad_sample="stop")


def test_nothing_decodable_fails_instead_of_spinning(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(BadDataError, match=r"no readable clip in the train split.*junk\.tar"):
        _take([str(junk)], counts=[5], on_bad_sample="skip")


def test_policy_counts_and_logs_each_problem_once(capsys):
    p = BadSamplePolicy("skip", max_in_a_row=5)
    for _ in range(3):
        p.sample_error({"__url__": "/d/s.tar"}, SampleError("sample 'k': missing 'json' member"))
    lines = capsys.readouterr().err.splitlines()
    assert p.skipped == 3 and len(lines) == 1 and "/d/s.tar" in lines[0] and lines[0].startswith("[sashimi] data: ")
    p.good()
    for _ in range(4):
        p.sample_error({"__url__": "/d/s.tar"}, SampleError("x"))
    with pytest.raises(BadDataError, match="5 bad"):
        p.sample_error({"__url__": "/d/s.tar"}, SampleError("x"))


# ---------------------------------------------------------------- hostile shard members

def test_pickle_members_in_a_shard_are_never_unpickled(tmp_path, shards):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(marker))
    members = _members_of(shard_paths(shards, "train")[0], 2)
    keys = sorted({n.split(".", 1)[0] for n in members})
    members[f"{keys[0]}.pyd"] = payload  # extra member on a good sample
    members[f"{keys[0]}.pickle"] = payload
    members["zzevil.pickle"] = payload  # a sample that is nothing but a pickle
    members["zzevil.json"] = b'{"schema_version": 1, "kind": "audio", "length": 1, "num_samples": 1}'
    shard = _tar(tmp_path / "hostile.tar", members)
    assert len(_take([str(shard)], steps=3)) == 3
    assert val_batches([str(shard)], n_batches=3, batch_size=1, examples=MU_LAW_256)
    with pytest.raises(SampleError):
        decode_sample({"__key__": "zzevil", "pickle": payload, "pyd": payload})
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: an unpickling reader would have run it
    assert marker.exists()


def test_reader_never_extracts_members_to_disk(tmp_path, shards, monkeypatch):
    """Members named ../ or / are only ever bytes in memory: the reader never calls extract(all)."""
    def no_extract(*a, **k):
        raise AssertionError("the training reader extracted a tar member to disk")

    monkeypatch.setattr(tarfile.TarFile, "extract", no_extract)
    monkeypatch.setattr(tarfile.TarFile, "extractall", no_extract)
    members = _members_of(shard_paths(shards, "train")[0], 2)
    escape = tmp_path / "outside"
    members[f"../../{escape.name}/evil.flac"] = b"x" * 64
    members[f"{escape}/abs.json"] = b"{}"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    shard = _tar(tmp_path / "escape.tar", members)
    assert len(_take([str(shard)], steps=3)) == 3
    assert not escape.exists() and list(work.iterdir()) == []


# ---------------------------------------------------------------- servers on loopback

def test_local_ray_cluster_dashboard_on_loopback(monkeypatch, capsys):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SASHIMI_PROBE", "1")
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    assert connect.connect_ray(2) is True
    assert seen["include_dashboard"] is True and seen["dashboard_host"] == "127.0.0.1"
    assert seen["runtime_env"]["env_vars"]["SASHIMI_PROBE"] == "1" and seen["num_cpus"] == 2
    # the TensorBoard command the project prints binds to loopback too
    monkeypatch.setattr(launch, "run", lambda *a, **k: launch.RunInfo("/r/j", "/r/j/tensorboard", None, {}, 0, 0, 0))
    summary.train_and_sample(job_from_dict(tiny_job("/d", "/r", "j"), "j.yaml"), "j.yaml", write_wav=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "tensorboard --logdir" in ln]
    assert lines and all(ln.rstrip().endswith("--host 127.0.0.1") for ln in lines)


def test_init_from_is_checked_before_ray(tmp_path, shards, no_ray):
    path = write_job(tmp_path / "j.yaml", tiny_job(shards, tmp_path / "runs", "branch"))
    with pytest.raises(JobConfigError, match=r"checkpoint\.init_from:.*nope.*missing"):
        prepare(load_job(path, [f"checkpoint.init_from={tmp_path / 'nope'}"]), str(path))
    job = load_job(path)
    src = _save(tmp_path / "old", 4, job=dataclasses.replace(job, model=dataclasses.replace(job.model, d_model=32)))
    with pytest.raises(JobConfigError, match=r"checkpoint\.init_from:.*model\.d_model: checkpoint 32, job 16"):
        prepare(load_job(path, [f"checkpoint.init_from={src}"]), str(path))
    src = _save(tmp_path / "old", 4, job=job)
    config = prepare(load_job(path, [f"checkpoint.init_from={src}"]), str(path))
    assert config.job.checkpoint.init_from == str(src)
