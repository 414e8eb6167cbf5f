"""Interrupted writes never leave a complete-looking shard; a rerun rebuilds cleanly."""
import tarfile

import pytest

from data_prep import load_manifest, make_demo_corpus, shard_folder
from data_prep.schema import decode_sample
from data_prep.tarshard import iter_tar_samples
from data_prep.verify import verify_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    src = tmp_path_factory.mktemp("demo")
    make_demo_corpus(src, minutes=0.5)
    return src


KW = dict(clip_seconds=1.0, shard_max_mb=0.1, workers=1, progress=False)


def test_interrupt_mid_shard_then_rerun(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    reference = shard_folder(demo, tmp_path / "ref", "generic", **KW)
    real_addfile = tarfile.TarFile.addfile
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 41:  # mid-shard, after the first shard has rotated
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real_addfile(self, *a, **k)

    monkeypatch.setattr(tarfile.TarFile, "addfile", flaky)
    with pytest.raises(KeyboardInterrupt):
        shard_folder(demo, out, "generic", **KW)
    monkeypatch.setattr(tarfile.TarFile, "addfile", real_addfile)

    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))
    finished = list(out.rglob("*.tar"))
    assert finished, "the first rotated shard should have been completed"
    for p in finished:  # every .tar that exists is whole
        assert all(decode_sample(r) for r in iter_tar_samples(p))

    m = shard_folder(demo, out, "generic", **KW)
    assert verify_dataset(out, progress=False) == []
    for s in ("train", "val", "test"):
        assert m["splits"][s]["shards"] == reference["splits"][s]["shards"]


def test_rerun_removes_leftovers_of_a_killed_run(demo, tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train/shard-000000.tar.tmp").write_bytes(b"half a shard")
    (out / "train/shard-000099.tar").write_bytes(b"stale shard from an older, larger build")
    (out / "manifest.json.tmp").write_text("{")
    (out / "train/keep-me.txt").write_text("user file")
    shard_folder(demo, out, "generic", **KW)
    assert not (out / "train/shard-000000.tar.tmp").exists() and not (out / "train/shard-000099.tar").exists()
    assert not (out / "manifest.json.tmp").exists() and (out / "train/keep-me.txt").exists()
    assert verify_dataset(out, progress=False) == []


def test_manifest_removed_before_rebuild(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shard_folder(demo, out, "generic", **KW)
    assert load_manifest(out)

    def boom(task):
        raise RuntimeError("worker crashed")

    monkeypatch.setattr("data_prep.shard.process_file", boom)
    with pytest.raises(RuntimeError):
        shard_folder(demo, out, "generic", **KW)
    assert not (out / "manifest.json").exists()  # old manifest no longer claims completeness


def test_error_in_parent_stops_worker_pool_promptly(demo, tmp_path, monkeypatch):
    """A failure while writing must not hang on (or finish) the queued pool work."""
    import time

    from data_prep.tarshard import AtomicShardWriter

    def fail(self, sample):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(AtomicShardWriter, "write", fail)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="disk full"):
        shard_folder(demo, tmp_path / "out", "generic", clip_seconds=1.0, workers=2, progress=False)
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "out/manifest.json").exists() and not list((tmp_path / "out").rglob("*.tar*"))
