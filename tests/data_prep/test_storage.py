"""data_prep.storage: local paths and s3:// URIs behave the same; a URI is never taken for a path."""
import os

import pytest

from data_prep import storage
from s3_server import free_port


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_write_read_list_remove_round_trip(root):
    storage.makedirs(root)
    storage.write_text(storage.join(root, "a", "m.json"), '{"x": 1}')
    storage.write_bytes(storage.join(root, "a", "b.bin"), b"\x00\x01" * 1000)
    assert storage.read_text(storage.join(root, "a", "m.json")) == '{"x": 1}'
    assert storage.read_bytes(storage.join(root, "a", "b.bin")) == b"\x00\x01" * 1000
    assert storage.listdir(storage.join(root, "a")) == ["b.bin", "m.json"]
    assert storage.listdir(storage.join(root, "missing")) == []
    assert storage.isfile(storage.join(root, "a", "b.bin"))
    assert not storage.exists(storage.join(root, "a", "nope"))
    storage.remove(storage.join(root, "a"), recursive=True)
    assert not storage.exists(storage.join(root, "a", "m.json"))


def test_failed_write_leaves_the_old_content(root):
    path = storage.join(root, "f.txt")
    storage.write_text(path, "old")

    def half(f):
        f.write(b"new, half written")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(path, half)
    assert storage.read_text(path) == "old"


def test_uri_is_never_a_path(tmp_path):
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k")
    assert not storage.is_uri("/a/b") and not storage.is_uri("rel/x") and not storage.is_uri("file:///tmp/x")
    assert storage.local_path("file:///tmp/x") == storage.local_path("/tmp/x")
    with pytest.raises(storage.StorageError, match="s3://b/k"):
        storage.local_path("s3://b/k")
    assert storage.join("s3://b/runs/", "x", "y") == "s3://b/runs/x/y"
    assert storage.join(str(tmp_path), "x") == os.path.join(str(tmp_path), "x")


def test_missing_bucket_and_unreachable_endpoint_are_named(s3_endpoint, monkeypatch):
    with pytest.raises(storage.StorageError, match=r"checkpoint.storage: s3://no-such-bucket-x/runs: bucket"):
        storage.check_writable_root("s3://no-such-bucket-x/runs", "checkpoint.storage")
    dead = free_port()  # a loopback port nobody listens on
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.setattr(storage, "_S3_CONFIG", {"connect_timeout": 1, "retries": {"max_attempts": 1}})
    with pytest.raises(storage.StorageError, match=r"data.shards: s3://b/ds: cannot reach the bucket"):
        storage.check_writable_root("s3://b/ds", "data.shards")
