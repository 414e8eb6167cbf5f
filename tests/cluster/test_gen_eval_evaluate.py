"""sashimi-eval: pooled NLL over whole clips (padding excluded) equals a direct computation;
per-file sums; batching and Ray workers change nothing."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from cluster.tools.evaluate import main, split_round_robin
from data_prep.manifest import shard_paths
from data_prep.schema import decode_sample
from data_prep.shard import shard_folder
from data_prep.tarshard import iter_tar_samples
from sashimi.metrics import shift_inputs
from sashimi.quantize import quantize
from cluster_helpers import make_checkpoint


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Audio files of uneven lengths -> 0.1 s clips at 4 kHz, last clip of each file padded, many shards."""
    root = tmp_path_factory.mktemp("evaldata")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, secs in enumerate((0.33, 0.47, 0.21, 0.38, 0.29, 0.52)):
        t = np.arange(int(secs * 8000)) / 8000
        x = 0.5 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(src / f"f{i}.wav", x.astype(np.float32), 8000)
    out = root / "shards"
    shard_folder(src, out, "generic", sample_rate=4000, clip_seconds=0.1, split=(0.34, 0.0, 0.66), pad_last=True,
                 seed=0, shard_max_mb=0.004, progress=False)
    return out


def _direct(net, data, split, quant):
    """Reference: decode every clip, quantise its valid prefix, score it alone."""
    files, bits, count = {}, 0.0, 0
    for path in shard_paths(data, split):
        for raw in iter_tar_samples(path):
            s = decode_sample(raw)
            x = torch.from_numpy(s.data[: s.length])
            x = 2 * (x - x.min()) / (x.max() - x.min()) - 1
            tok = quantize(x, quant)
            with torch.no_grad():
                logits = net(shift_inputs(tok[None], 128))[0]
            b = float(F.cross_entropy(logits.double(), tok, reduction="sum")) / math.log(2)
            f = files.setdefault(s.meta["source"], [0.0, 0])
            f[0] += b
            f[1] += s.length
            bits += b
            count += s.length
    return bits / count, files, count


def _eval(tmp_path, ckpt, data, *args):
    out = tmp_path / "eval.json"
    assert main([str(ckpt), "--data", str(data), "--out", str(out), "--quiet", *args]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("quant", ["mu-law", "linear"])
def test_eval_equals_direct_computation(tmp_path, shards, quant):
    ckpt, net, _ = make_checkpoint(tmp_path / "ck", quantization=quant)
    assert len(shard_paths(shards, "test")) >= 3
    lengths = [decode_sample(r).length for p in shard_paths(shards, "test") for r in iter_tar_samples(p)]
    assert min(lengths) < 400 == max(lengths)  # padded clips are in the set
    mean, files, count = _direct(net, shards, "test", quant)
    rep = _eval(tmp_path, ckpt, shards, "--split", "test")
    assert rep["overall"]["samples"] == count == sum(lengths) and rep["overall"]["clips"] == len(lengths)
    assert rep["overall"]["bits_per_byte"] == pytest.approx(mean, rel=1e-6)
    assert set(rep["files"]) == set(files) and len(files) >= 2
    for name, (b, n) in files.items():
        assert rep["files"][name]["samples"] == n
        assert rep["files"][name]["bits_per_byte"] == pytest.approx(b / n, rel=1e-6)
    batched = _eval(tmp_path, ckpt, shards, "--split", "test", "--batch", "4")
    assert batched["overall"]["bits_per_byte"] == pytest.approx(mean, rel=1e-6)


def test_eval_errors_name_inputs(tmp_path, shards, capsys):
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    assert main([str(ckpt), "--data", str(tmp_path / "none"), "--quiet"]) == 2
    assert "none/manifest.json" in capsys.readouterr().err
    assert main([str(ckpt), "--data", str(shards), "--split", "val", "--quiet"]) == 2
    assert "no shards" in capsys.readouterr().err
    assert main([str(tmp_path / "missing-ck"), "--data", str(shards), "--quiet"]) == 2
    assert "missing-ck" in capsys.readouterr().err


def test_round_robin_split():
    assert split_round_robin(list(range(5)), 2) == [[0, 2, 4], [1, 3]]
    assert split_round_robin([1], 4) == [[1]]


@pytest.mark.slow
def test_two_ray_workers_equal_one(tmp_path, shards):
    import ray

    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    single = _eval(tmp_path, ckpt, shards, "--split", "test")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        multi = _eval(tmp_path, ckpt, shards, "--split", "test", "--workers", "2")
    finally:
        ray.shutdown()
    assert multi["overall"]["samples"] == single["overall"]["samples"]
    assert multi["overall"]["bits_per_byte"] == pytest.approx(single["overall"]["bits_per_byte"], rel=1e-12)
    for name, v in single["files"].items():
        assert multi["files"][name]["samples"] == v["samples"]
        assert multi["files"][name]["bits"] == pytest.approx(v["bits"], rel=1e-12)
    # without a running Ray, sashimi-eval starts its own local one and shuts it down again
    again = _eval(tmp_path, ckpt, shards, "--split", "test", "--workers", "3")
    assert again["overall"]["bits"] == pytest.approx(single["overall"]["bits"], rel=1e-12)
    assert not ray.is_initialized()
