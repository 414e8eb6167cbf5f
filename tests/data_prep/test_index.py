"""data_prep.index: the member offsets the shard writer records, a scan of a shard's headers, and reading
one sample with one ranged read, locally and from an S3 server: the same bytes as the streaming reader."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from data_prep import storage
from data_prep.demo import make_demo_corpus
from data_prep.index import ShardIndex, index_path, load_index, read_sample, scan_shard
from data_prep.manifest import shard_paths
from data_prep.reader import open_tar
from data_prep.shard import shard_folder
from data_prep.tarshard import TarMemberError
from data_prep.verify import verify_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    make_demo_corpus(root / "src", minutes=0.2, seed=0)
    shard_folder(root / "src", root / "shards", "generic", sample_rate=16000, clip_seconds=1.0, seed=0,
                 progress=False)
    return root / "shards"


def test_the_writer_records_what_a_header_scan_finds(dataset):
    shards = shard_paths(dataset, "train")
    for shard in shards:
        written = load_index(shard)  # the sidecar
        assert Path(index_path(shard)).is_file()
        scanned = scan_shard(shard)
        assert (written.keys, written.fields) == (scanned.keys, scanned.fields) and scanned.error is None
        assert set(written.fields) == {"flac", "json"} and len(written) > 0
    assert verify_dataset(dataset, progress=False) == []  # sidecars are not stray files, and they match


@pytest.mark.parametrize("where", ["local", "s3"])
def test_ranged_reads_give_the_streaming_readers_bytes(dataset, where, request):
    shard = shard_paths(dataset, "train")[0]
    if where == "s3":
        uri = request.getfixturevalue("s3_bucket") + "/ds/" + Path(shard).name
        storage.put_file(shard, uri)
        storage.put_file(index_path(shard), index_path(uri))
        shard = uri
    index = load_index(shard)
    streamed = list(open_tar(shard))
    assert len(streamed) == len(index)
    for i in reversed(range(len(index))):  # any order: random access
        got, want = read_sample(shard, index, i), streamed[i]
        assert got == {**want, "__url__": shard}


def test_a_damaged_index_is_reported_by_verify(tmp_path, dataset):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    shard = shard_paths(copy, "train")[0]
    idx = load_index(shard)
    bad = ShardIndex(idx.keys, {**idx.fields, "json": ((0, 10),) + idx.fields["json"][1:]})
    Path(index_path(shard)).write_text(bad.to_json())
    assert any("member index does not match" in p for p in verify_dataset(copy, progress=False))
    Path(index_path(shard)).write_text("{not json")
    assert any("not a shard index" in p for p in verify_dataset(copy, progress=False))


def test_a_truncated_shard_indexes_its_intact_prefix_and_names_the_rest(tmp_path, dataset):
    shard = shard_paths(dataset, "train")[0]
    raw = Path(shard).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: len(raw) // 2])
    index = scan_shard(str(cut))
    full = len(scan_shard(shard))
    assert 0 < len(index) < full and index.error is not None
    assert read_sample(str(cut), index, 0)["__key__"] == index.keys[0]
    with pytest.raises(TarMemberError, match=rf"cut\.tar: sample {full - 1} is not in the shard"):
        read_sample(str(cut), index, full - 1)


def test_a_sample_missing_a_member_is_indexed_without_it(tmp_path):
    path = tmp_path / "gap.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for name in ("a.flac", "a.json", "b.json", "c.flac", "c.json"):
            info = tarfile.TarInfo(name)
            info.size = len(name)
            t.addfile(info, io.BytesIO(name.encode()))
    index = scan_shard(str(path))
    assert index.keys == ("a", "b", "c") and index.fields["flac"][1] is None
    assert read_sample(str(path), index, 1) == {"__key__": "b", "__url__": str(path), "json": b"b.json"}
    assert read_sample(str(path), index, 2)["flac"] == b"c.flac"
