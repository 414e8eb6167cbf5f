"""MNIST demos on shards written by sashimi-prep from small IDX files: digit completion from the
top rows (PNG grid + pixels) and the S4 sequence classifier's train/test path."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cluster.mnist_demo import GEN_RGB, PRIME_RGB, completion_grid, load_classifier, load_digits, main
from data_prep.cli import main as prep_main
from sashimi.metrics import shift_inputs
from test_gen_eval_helpers import make_checkpoint, write_mnist_idx

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


def test_classifier_trains_and_reports_test_accuracy(tmp_path, mnist):
    shards, sets = mnist
    job = yaml.safe_load(open("jobs/smnist-classify.yaml"))
    job["data"]["shards"] = str(shards)
    job["checkpoint"]["storage"] = str(tmp_path / "runs")
    job["model"] = {"d_model": 16, "n_layers": 1, "d_state": 8, "kernel": "s4d", "ff": 0, "l_max": 784}
    job["training"].update(max_steps=30, batch_per_worker=8)
    job["schedule"] = {"kind": "constant"}
    job["optim"]["lr"] = 3e-2
    job["eval"] = {"every": 15, "val_batches": 2, "val_batch_size": 16}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["classify", str(path), "--quiet", "--threads", "2"]) == 0
    res = json.loads((tmp_path / "runs" / "smnist-classify" / "classify_result.json").read_text())
    assert res["test_examples"] == 60 and [h["step"] for h in res["history"]] == [15, 30]
    assert res["test_accuracy"] >= 0.8  # chance is 0.1
    model, saved_job = load_classifier(res["checkpoint"])
    assert saved_job["model"]["d_model"] == 16
    x, y = sets["t10k"]
    with torch.no_grad():
        pred = model(torch.from_numpy(x.reshape(60, 784).astype(np.int64))).argmax(-1).numpy()
    assert res["test_accuracy"] == pytest.approx(float((pred == y).mean()))
    out = tmp_path / "acc.json"
    assert main(["classify-eval", res["checkpoint"], "--data", str(shards), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(res["test_accuracy"])


def test_classify_job_errors_name_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {quantization: mu-law, shards: /nowhere}\nmodel: {l_max: 784}\n")
    assert main(["classify", str(bad), "--quiet"]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["classify-eval", str(tmp_path / "junk.pt"), "--data", "/nowhere"]) == 2
    assert "junk.pt" in capsys.readouterr().err


def test_eval_pixel_checkpoint_bits_per_pixel(tmp_path, mnist):
    """sashimi-eval on MNIST shards: tokens are the raw pixels (quantization none)."""
    import math

    import torch.nn.functional as F

    from cluster.evaluate import main as eval_main

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
