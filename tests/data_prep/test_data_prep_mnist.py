"""MNIST IDX (gz and plain) -> pixel-sequence shards with labels and a disjoint val slice."""
import gzip
import struct

import numpy as np
import pytest

from data_prep.cli import main
from data_prep.manifest import load_manifest, shard_paths
from data_prep.mnist import read_idx
from data_prep.schema import decode_sample
from data_prep.shard import PrepError
from data_prep.tarshard import iter_tar_samples


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _write(d, gz: bool, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    sets = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for what, arr, dims in (("images", x, 3), ("labels", y, 1)):
            name = f"{part}-{what}-idx{dims}-ubyte"
            data = _idx(arr)
            (d / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
        sets[part] = (x, y)
    return sets


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz):
    src, out = tmp_path / "idx", tmp_path / "out"
    src.mkdir()
    sets = _write(src, gz)
    assert main(["mnist", str(src), str(out), "--val-count", "10", "--quiet"]) == 0
    m = load_manifest(out)
    assert m["kind"] == "pixels" and m["clip_samples"] == 784
    assert {s: m["splits"][s]["clips"] for s in m["splits"]} == {"train": 50, "val": 10, "test": 20}
    seen = {}
    for split in ("train", "val", "test"):
        for raw in (r for p in shard_paths(out, split) for r in iter_tar_samples(p)):
            s = decode_sample(raw)
            part = "t10k" if split == "test" else "train"
            x, y = sets[part]
            i = s.meta["index"]
            np.testing.assert_array_equal(s.data, x[i].reshape(-1))
            assert s.label == y[i] and s.length == 784
            assert (part, i) not in seen
            seen[(part, i)] = split
    assert len(seen) == 80
    assert main(["verify", str(out), "--quiet"]) == 0
    assert main(["inspect", str(out)]) == 0
    # deterministic val slice
    assert main(["mnist", str(src), str(tmp_path / "out2"), "--val-count", "10", "--quiet"]) == 0
    assert load_manifest(tmp_path / "out2")["splits"] == m["splits"]


def test_bad_idx_files_named(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(PrepError, match="x: 3 data bytes"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(PrepError, match="bad magic"):
        read_idx(tmp_path / "y")
    with pytest.raises(PrepError, match="missing train-images"):
        from data_prep.mnist import shard_mnist
        shard_mnist(tmp_path, tmp_path / "o", progress=False)
