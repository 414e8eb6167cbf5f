"""Sample schema: exact 16-bit round trip, padding length, and decode errors that name the key."""
import json

import numpy as np
import pytest

from data_prep.schema import (SCHEMA_VERSION, Sample, SampleError, decode_sample, encode_audio_sample,
                              encode_pixels_sample)


def test_audio_round_trip_within_one_lsb():
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0, 0.3, 16000), -0.999, 0.999).astype(np.float32)
    x[:3] = [1.0, -1.0, 0.0]
    enc = encode_audio_sample("k0", x, 16000, 16000, {"source": "a.wav", "clip": 0})
    assert set(enc) == {"__key__", "flac", "json"} and enc["flac"][:4] == b"fLaC"
    s = decode_sample(dict(enc, __url__="x.tar"))
    assert isinstance(s, Sample) and s.kind == "audio" and s.sample_rate == 16000
    assert s.data.dtype == np.float32 and s.data.shape == (16000,)
    assert np.max(np.abs(s.data - x)) <= 1 / 32768 + 1e-9
    assert np.max(np.abs(s.data[3:] - x[3:])) <= 0.5 / 32768 + 1e-9  # round to nearest, not truncate
    assert s.meta == {"source": "a.wav", "clip": 0} and s.label is None
    assert json.loads(enc["json"])["schema_version"] == SCHEMA_VERSION


def test_padding_is_flagged_by_length_and_label_lifted():
    x = np.zeros(100, np.float32)
    x[:40] = 0.25
    s = decode_sample(encode_audio_sample("k1", x, 40, 8000, {"label": 3}))
    assert s.length == 40 and len(s.data) == 100 and s.label == 3 and "label" not in s.meta
    assert np.all(s.data[40:] == 0)


def test_pixels_round_trip():
    px = np.arange(784, dtype=np.uint16).astype(np.uint8)
    enc = encode_pixels_sample("img-1", px, 7, {"index": 1})
    assert len(enc["u8"]) == 784
    s = decode_sample(enc)
    assert s.kind == "pixels" and s.label == 7 and s.length == 784 and s.sample_rate is None
    np.testing.assert_array_equal(s.data, px)


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.pop("flac"), "missing 'flac'"),
    (lambda d: d.pop("json"), "missing 'json'"),
    (lambda d: d.__setitem__("flac", b"garbage"), "undecodable"),
    (lambda d: d.__setitem__("json", b"{not json"), "bad json"),
    (lambda d: d.__setitem__("json", d["json"].replace(b'"num_samples": 50', b'"num_samples": 51')), "50 values decoded"),
    (lambda d: d.__setitem__("json", d["json"].replace(b'"length": 50', b'"length": 0')), "length 0"),
    (lambda d: d.__setitem__("json", d["json"].replace(b'"schema_version": 1', b'"schema_version": 99')), "schema_version"),
])
def test_decode_errors_name_key_and_reason(mutate, reason):
    d = encode_audio_sample("badkey", np.zeros(50, np.float32), 50, 16000, {})
    mutate(d)
    with pytest.raises(SampleError, match="badkey") as e:
        decode_sample(d)
    assert reason in str(e.value)


def test_pixels_wrong_length_rejected():
    d = encode_pixels_sample("p", np.zeros(784, np.uint8), 1, {})
    d["u8"] = d["u8"][:-1]
    with pytest.raises(SampleError, match="783 values"):
        decode_sample(d)


def test_encode_rejects_dotted_keys_and_nan():
    with pytest.raises(SampleError):
        encode_audio_sample("a.b", np.zeros(4, np.float32), 4, 16000, {})
    with pytest.raises(SampleError, match="NaN"):
        encode_audio_sample("a", np.array([0, np.nan], np.float32), 2, 16000, {})


def test_reader_modules_stay_light():
    """The cluster's reader imports these: no torch, no model code, no Ray."""
    import subprocess
    import sys

    code = ("import sys, data_prep, data_prep.schema, data_prep.manifest, data_prep.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'sashimi', 'ray')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
