"""MNIST demos on shards written by sashimi-prep from small IDX files: digit completion from the
top rows (PNG grid + pixels) and pixel NLL. (The S4 classifier, trained by sashimi-train: test_cluster_classify.py.)"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cluster.tools.mnist_demo import GEN_RGB, PRIME_RGB, completion_grid, load_digits, main
from data_prep.cli import main as prep_main
from sashimi.metrics import shift_inputs
from cluster_helpers import make_checkpoint, write_mnist_idx

PIXEL_MODEL = dict(d_model=8, n_layers=1, d_state=8, pool=[4, 4], expand=2, ff=2, l_max=784)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    sets = write_mnist_idx(root / "idx", n_train=240, n_test=60)
    assert prep_main(["mnist", str(root / "idx"), str(root / "shards"), "--val-count", "40", "--quiet"]) == 0
    return root / "shards", sets


def test_complete_digits_grid(tmp_path, mnist):
    shards, sets = mnist
    ckpt, net, _ = make_checkpoint(tmp_path / "ck", quantization="none", shards=str(shards), model=PIXEL_MODEL)
    out = tmp_path / "grid.png"
    assert main(["complete", str(ckpt), "--data", str(shards), "--n", "5", "--rows", "10", "--temperature", "0",
                 "--scale", "1", "--out", str(out), "--quiet"]) == 0
    done = np.load(out.with_suffix(".npy"))
    x, _ = load_digits(shards, "test", 5)
    assert done.shape == (5, 784) and np.array_equal(x, sets["t10k"][0][:5].reshape(5, 784))
    assert np.array_equal(done[:, :280], x[:, :280])  # the prime is the digit's top 10 rows
    with torch.no_grad():
        logits = net(shift_inputs(torch.from_numpy(done.astype(np.int64)), 128))
    assert torch.equal(logits[:, 280:].argmax(-1), torch.from_numpy(done[:, 280:].astype(np.int64)))
    img = np.asarray(Image.open(out))
    assert np.array_equal(img, completion_grid(x, done, 280, scale=1))
    cell = img[2:30, 2 + 30:2 + 58].astype(float)  # digit 0's completion, next to its original
    assert np.array_equal(img[2:30, 2:30, 0], x[0].reshape(28, 28))  # original in grey
    v = done[0].reshape(28, 28).astype(float)
    np.testing.assert_allclose(cell[3, 5], np.rint(v[3, 5] * np.array(PRIME_RGB)), atol=0.5)
    np.testing.assert_allclose(cell[20, 5], np.rint(v[20, 5] * np.array(GEN_RGB)), atol=0.5)


def test_complete_refuses_audio_checkpoint(tmp_path, mnist, capsys):
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    assert main(["complete", str(ckpt), "--data", str(mnist[0]), "--out", str(tmp_path / "g.png")]) == 2
    assert "quantization 'mu-law'" in capsys.readouterr().err


def test_eval_pixel_checkpoint_bits_per_pixel(tmp_path, mnist):
    """sashimi-eval on MNIST shards: tokens are the raw pixels (quantization none)."""
    import math

    import torch.nn.functional as F

    from cluster.tools.evaluate import main as eval_main

    shards, sets = mnist
    ckpt, net, _ = make_checkpoint(tmp_path / "ck", quantization="none", shards=str(shards), model=PIXEL_MODEL)
    out = tmp_path / "e.json"
    assert eval_main([str(ckpt), "--data", str(shards), "--split", "test", "--batch", "16", "--out", str(out),
                      "--quiet"]) == 0
    rep = json.loads(out.read_text())
    x = torch.from_numpy(sets["t10k"][0].reshape(-1, 784).astype(np.int64))
    with torch.no_grad():
        logits = net(shift_inputs(x, 128))
    bits = float(F.cross_entropy(logits.reshape(-1, 256).double(), x.reshape(-1), reduction="sum")) / math.log(2)
    assert rep["overall"]["samples"] == 60 * 784 and list(rep["files"]) == ["t10k-images"]
    assert rep["overall"]["bits_per_byte"] == pytest.approx(bits / (60 * 784), rel=1e-6)
