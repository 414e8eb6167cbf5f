"""verify: tampering, hostile tar member paths, missing and stray shards are all caught."""
import io
import json
import tarfile

import pytest

from data_prep import make_demo_corpus, shard_folder
from data_prep.cli import main
from data_prep.tarshard import TarMemberError, iter_tar_samples, sha256_file


@pytest.fixture
def dataset(tmp_path_factory, tmp_path):
    src = tmp_path / "src"
    make_demo_corpus(src, minutes=0.3)
    out = tmp_path / "out"
    shard_folder(src, out, "generic", clip_seconds=1.0, workers=1, progress=False)
    return out


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _rewrite_shard(out, split, data: bytes):
    """Replace a shard and fix its checksum, so only the content check can catch it."""
    m = _manifest(out)
    entry = m["splits"][split]["shards"][0]
    p = out / entry["path"]
    p.write_bytes(data)
    entry["bytes"], entry["sha256"] = len(data), sha256_file(p)
    (out / "manifest.json").write_text(json.dumps(m))


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_clean_dataset_verifies(dataset, capsys):
    assert main(["verify", str(dataset), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out


def test_flipped_bytes_fail(dataset, capsys):
    p = dataset / _manifest(dataset)["splits"]["train"]["shards"][0]["path"]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    assert main(["verify", str(dataset), "--quiet"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "a/../../evil.json"])
def test_hostile_member_path_fails(dataset, capsys, name):
    _rewrite_shard(dataset, "val", _tar([(name, b"{}")]))
    assert main(["verify", str(dataset), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "unsafe member path" in out and name in out
    assert not (dataset.parent / "evil.json").exists()


def test_iter_tar_samples_rejects_links_and_escapes(tmp_path):
    p = tmp_path / "x.tar"
    p.write_bytes(_tar([("../x.json", b"{}")]))
    with pytest.raises(TarMemberError, match="unsafe"):
        list(iter_tar_samples(p))
    with tarfile.open(p, "w") as tar:
        info = tarfile.TarInfo("k.flac")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(TarMemberError, match="not a regular file"):
        list(iter_tar_samples(p))


def test_undecodable_sample_and_count_mismatch(dataset, capsys):
    _rewrite_shard(dataset, "test", _tar([("k0.flac", b"not flac"), ("k0.json", b"{}")]))
    assert main(["verify", str(dataset), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "'k0'" in out and "manifest says" in out


def test_missing_and_stray_shards(dataset, capsys):
    m = _manifest(dataset)
    (dataset / m["splits"]["val"]["shards"][0]["path"]).unlink()
    (dataset / "train/shard-000777.tar").write_bytes(b"")
    assert main(["verify", str(dataset), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "stray" in out


def test_manifest_shard_path_escaping_is_rejected(dataset, capsys):
    m = _manifest(dataset)
    m["splits"]["train"]["shards"][0]["path"] = "../outside.tar"
    (dataset / "manifest.json").write_text(json.dumps(m))
    assert main(["verify", str(dataset), "--quiet"]) == 1
    assert "escapes" in capsys.readouterr().out
