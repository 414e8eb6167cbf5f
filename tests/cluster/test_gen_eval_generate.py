"""sashimi-generate end to end: greedy == conv argmax, JSON NLL == conv NLL == sampler's log-probs,
priming from a file, the checkpoint's own quantisation and sample rate."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

from cluster.tools.generate import main
from sashimi.metrics import shift_inputs
from sashimi.quantize import linear_decode, mu_law_decode, mu_law_encode
from cluster_helpers import make_checkpoint


def _run(tmp_path, ckpt, *args):
    out = tmp_path / "gen"
    assert main([str(ckpt), "--out", str(out), "--quiet", *args]) == 0
    return out, json.loads((out / "generation.json").read_text())


def _conv(net, seq):
    with torch.no_grad():
        return net(shift_inputs(seq[None], 128))[0]


def test_greedy_equals_conv_argmax_and_nll_matches(tmp_path):
    ckpt, net, _ = make_checkpoint(tmp_path / "ck")
    out, rep = _run(tmp_path, ckpt, "--seconds", "0.1", "--sample-rate", "1000", "--batch", "2",
                    "--temperature", "0", "--seed", "1")
    assert rep["generated_samples"] == 100 and rep["sample_rate_from"] == "--sample-rate" and rep["step"] == 7
    for s in rep["samples"]:
        tok = torch.from_numpy(np.load(out / s["tokens"]).astype(np.int64))
        logits = _conv(net, tok)
        assert torch.equal(logits.argmax(-1), tok)  # greedy step-mode sampling == conv-mode argmax
        bits = float(F.cross_entropy(logits.double(), tok, reduction="sum")) / math.log(2)
        assert s["bits_sum"] == pytest.approx(bits, rel=1e-6)
        assert s["bits_mean"] == pytest.approx(bits / 100, rel=1e-6)
        assert s["step_bits_sum"] == pytest.approx(bits, rel=1e-5)  # sampler's per-step log-probs
        wav, sr = sf.read(out / s["wav"], dtype="float32")
        assert sr == 1000 and np.abs(wav - mu_law_decode(tok).numpy()).max() <= 1 / 32768 + 1e-7
        img = Image.open(out / s["spectrogram"])
        assert img.mode == "L" and min(img.size) > 1


def test_sampled_nll_matches_sampler_log_probs(tmp_path):
    ckpt, net, _ = make_checkpoint(tmp_path / "ck", seed=3)
    out, rep = _run(tmp_path, ckpt, "--seconds", "0.08", "--sample-rate", "1000", "--batch", "3",
                    "--temperature", "0.9", "--top-p", "0.95", "--seed", "5")
    toks = [np.load(out / s["tokens"]) for s in rep["samples"]]
    assert len({t.tobytes() for t in toks}) == 3  # the batch samples independently
    for s in rep["samples"]:  # NLL is at temperature 1 whatever the sampling temperature was
        assert s["step_bits_sum"] == pytest.approx(s["bits_sum"], rel=1e-5)
        assert s["bits_mean"] > 0


def test_prime_file_quantised_like_training_and_continued(tmp_path):
    ckpt, net, _ = make_checkpoint(tmp_path / "ck")
    rng = np.random.default_rng(0)
    stereo = (0.4 * rng.standard_normal((300, 2))).clip(-1, 1).astype(np.float32)
    sf.write(tmp_path / "p.wav", stereo, 1000, subtype="FLOAT")
    out, rep = _run(tmp_path, ckpt, "--seconds", "0.05", "--sample-rate", "1000", "--prime", str(tmp_path / "p.wav"),
                    "--prime-seconds", "0.2", "--temperature", "0", "--batch", "2")
    assert rep["prime"]["samples"] == 200
    mono = torch.from_numpy(stereo.mean(1)[:200])
    expect = mu_law_encode(2 * (mono - mono.min()) / (mono.max() - mono.min()) - 1)
    for s in rep["samples"]:
        tok = torch.from_numpy(np.load(out / s["tokens"]).astype(np.int64))
        assert tok.shape == (250,) and torch.equal(tok[:200], expect)
        logits = _conv(net, tok)
        # stepping priming == conv mode: logits[t] predicts tok[t]; greedy continuation == conv argmax
        assert torch.equal(logits[200:].argmax(-1), tok[200:])
        bits = float(F.cross_entropy(logits[200:].double(), tok[200:], reduction="sum")) / math.log(2)
        assert s["bits_sum"] == pytest.approx(bits, rel=1e-6)
        assert s["step_bits_sum"] == pytest.approx(bits, rel=1e-5)
    # a prime at another rate is resampled to the job's rate
    sf.write(tmp_path / "p2.wav", stereo, 2000, subtype="FLOAT")
    _, rep = _run(tmp_path, ckpt, "--seconds", "0.01", "--sample-rate", "1000", "--prime", str(tmp_path / "p2.wav"),
                  "--prime-seconds", "0.1")
    assert rep["prime"]["samples"] == 100


def test_linear_checkpoint_decodes_linearly(tmp_path):
    ckpt, _, _ = make_checkpoint(tmp_path / "ck", quantization="linear")
    out, rep = _run(tmp_path, ckpt, "--seconds", "0.06", "--sample-rate", "1000", "--seed", "0")
    assert rep["quantization"] == "linear"
    s = rep["samples"][0]
    tok = torch.from_numpy(np.load(out / s["tokens"]).astype(np.int64))
    wav, _ = sf.read(out / s["wav"], dtype="float32")
    assert np.abs(wav - linear_decode(tok).clamp(-1, 1).numpy()).max() <= 1 / 32768 + 1e-7
    assert np.abs(wav - mu_law_decode(tok).numpy()).max() > 0.05  # not the official generator's mu-law


def test_sample_rate_from_checkpoint(tmp_path):
    """The rate stored at training time is used, whether or not the dataset is still there."""
    ckpt, _, _ = make_checkpoint(tmp_path / "ck", sample_rate=2000)  # its shards do not exist
    out, rep = _run(tmp_path, ckpt, "--seconds", "0.02", "--seed", "0")
    assert rep["sample_rate"] == 2000 and rep["generated_samples"] == 40 and rep["sample_rate_from"] == "checkpoint"
    assert sf.info(str(out / "sample_000.wav")).samplerate == 2000
    _, rep = _run(tmp_path, ckpt, "--seconds", "0.01", "--seed", "0", "--sample-rate", "1000")
    assert rep["sample_rate"] == 1000 and rep["generated_samples"] == 10 and rep["sample_rate_from"] == "--sample-rate"


def test_errors_name_the_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--seconds", "1", "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    (tmp_path / "bad.wav").write_bytes(b"RIFF junk")
    assert main([str(ckpt), "--seconds", "0.01", "--prime", str(tmp_path / "bad.wav"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.wav" in capsys.readouterr().err
    pix, _, _ = make_checkpoint(tmp_path / "pix", quantization="none")
    assert main([str(pix), "--seconds", "0.01", "--out", str(tmp_path / "o")]) == 2
    assert "mnist_demo" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_cli_equals_eager(tmp_path):
    """--compile (Inductor-compiled tiers, compiled before timing) gives the same greedy samples and scores."""
    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    common = ["--seconds", "0.05", "--sample-rate", "1000", "--batch", "2", "--temperature", "0", "--seed", "0"]
    out_e, eager = _run(tmp_path / "e", ckpt, *common)
    out_c, comp = _run(tmp_path / "c", ckpt, *common, "--compile")
    assert comp["compile"] and comp["compile_seconds"] > 0
    for a, b in zip(eager["samples"], comp["samples"]):
        assert np.array_equal(np.load(out_e / a["tokens"]), np.load(out_c / b["tokens"]))
        assert b["step_bits_sum"] == pytest.approx(a["step_bits_sum"], rel=1e-5)


def test_compile_chosen_by_the_amount_of_work(tmp_path, monkeypatch):
    """Without --compile/--eager, a short clip with nothing cached runs eager; a cached compiled step
    (or enough work) makes it compile. The decision is recorded."""
    from sashimi import SaShiMi

    ckpt, _, _ = make_checkpoint(tmp_path / "ck")
    common = ["--seconds", "0.05", "--sample-rate", "1000", "--temperature", "0", "--seed", "0"]
    _, auto = _run(tmp_path / "a", ckpt, *common)
    assert auto["compile"] is False and auto["compile_seconds"] == 0
    monkeypatch.setenv("SASHIMI_COMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(SaShiMi, "compiled_step_cached", lambda self, batch, sample_in_step=True: True)
    monkeypatch.setattr("sashimi.tier_step.CompiledTier.__call__",
                        lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("compiled path taken")))
    with pytest.raises(RuntimeError, match="compiled path taken"):
        _run(tmp_path / "b", ckpt, *common)
    _, eager = _run(tmp_path / "c", ckpt, *common, "--eager")
    assert eager["compile"] is False
