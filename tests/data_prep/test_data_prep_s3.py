"""sashimi-prep with OUT in an object store (a real S3 server on 127.0.0.1): the same dataset as
on local disk, verify/inspect read it from the bucket, and a failed build leaves no manifest."""
import json

import pytest

from data_prep import make_demo_corpus, storage
from data_prep import publish as publish_mod
from data_prep.cli import main
from data_prep.manifest import load_manifest, shard_paths
from data_prep.reader import open_tar


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    make_demo_corpus(src, minutes=0.3)
    return src


def _shard(src, out, capsys):
    assert main(["shard", str(src), str(out), "--clip-seconds", "1", "--workers", "1", "--quiet"]) == 0
    return capsys.readouterr()


def test_shard_to_bucket_equals_local_and_verifies(corpus, tmp_path, s3_bucket, capsys):
    uri = f"{s3_bucket}/ds"
    _shard(corpus, tmp_path / "local", capsys)
    printed = _shard(corpus, uri, capsys)
    assert f"-> {uri}" in printed.out
    assert not (tmp_path / "s3:").exists()  # a URI is never a local folder
    local, remote = load_manifest(tmp_path / "local"), load_manifest(uri)
    for m in (local, remote):
        m.pop("build_seconds")
    assert local == remote  # same shards, same sha256, same counts
    for split in ("train", "val"):
        for lp, rp in zip(shard_paths(tmp_path / "local", split), shard_paths(uri, split), strict=True):
            assert rp.startswith(uri + "/")
            assert [s["__key__"] for s in open_tar(lp)] == [s["__key__"] for s in open_tar(rp)]
    assert main(["verify", uri, "--quiet"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    assert main(["inspect", uri]) == 0
    assert uri in capsys.readouterr().out


def test_verify_catches_a_changed_object(corpus, s3_bucket, capsys):
    uri = f"{s3_bucket}/ds"
    _shard(corpus, uri, capsys)
    shard = shard_paths(uri, "train")[0]
    data = bytearray(storage.read_bytes(shard))
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(shard, bytes(data))
    assert main(["verify", uri, "--quiet"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out


def test_interrupted_upload_leaves_no_manifest(corpus, s3_bucket, capsys, monkeypatch):
    """A rebuild that dies half-way through uploading: the old manifest is already gone, so the
    half-replaced dataset is never taken for complete."""
    uri = f"{s3_bucket}/ds"
    _shard(corpus, uri, capsys)
    calls = []

    def flaky(local, path):
        calls.append(path)
        if len(calls) == 2:
            raise storage.StorageError(f"{path}: write failed: simulated connection reset")
        return storage.put_file(local, path)

    monkeypatch.setattr(publish_mod.storage, "put_file", flaky)
    assert main(["shard", str(corpus), uri, "--clip-seconds", "1", "--workers", "1", "--quiet"]) == 2
    assert "simulated connection reset" in capsys.readouterr().err
    assert not storage.exists(f"{uri}/manifest.json")
    assert main(["verify", uri, "--quiet"]) == 1
    assert "no manifest" in capsys.readouterr().out


def test_missing_bucket_fails_before_decoding(corpus, s3_endpoint, capsys):
    assert main(["shard", str(corpus), "s3://no-such-bucket-prep/ds", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "OUT: s3://no-such-bucket-prep/ds: bucket 'no-such-bucket-prep' does not exist" in err
    assert main(["shard", "s3://b/src", "out", "--quiet"]) == 2
    assert "the source must be a local folder" in capsys.readouterr().err


def test_manifest_json_is_the_local_one(corpus, s3_bucket, capsys):
    uri = f"{s3_bucket}/ds"
    _shard(corpus, uri, capsys)
    m = json.loads(storage.read_text(f"{uri}/manifest.json"))
    assert all(not s["path"].startswith(("/", "s3:")) for s in m["splits"]["train"]["shards"])
