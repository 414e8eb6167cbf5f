"""Decoding, downmix, resampling and clip cutting."""
import numpy as np
import pytest

from data_prep.audio_io import BadAudio, fft_resample, load_mono, probe, resample, resampled_length
from data_prep.clips import clip_spans, cut
from data_prep_fixtures import sine, write_audio


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("orig", [44100, 22050, 48000, 7919])
def test_resample_keeps_sine_frequency(tmp_path, orig):
    p = write_audio(tmp_path / "s.wav", sine(2.0, orig, freq=1000.0), orig)
    y, info = load_mono(str(p), 16000)
    assert info["source_sample_rate"] == orig
    assert abs(len(y) - 32000) <= 1
    assert abs(_peak_hz(y, 16000) - 1000.0) <= 1.0
    mid = y[1000:-1000]
    assert abs(np.abs(mid).max() - 0.5) < 0.01  # amplitude kept


@pytest.mark.parametrize("orig", [16000, 44100, 22050, 48000, 11025, 7919, 44101])
@pytest.mark.parametrize("frames", [1, 999, 16001, 123457])
def test_resampled_length_is_what_resample_returns(orig, frames):
    """The header probe judges a file's length after resampling without decoding it: its count must be the
    resampler's own (sinc path, and the FFT path for awkward ratios such as 7919 and 44101 Hz)."""
    y = resample(np.zeros(frames, np.float32), orig, 16000)
    assert resampled_length(frames, orig, 16000) == len(y)


def test_probe_reads_the_header_without_decoding(tmp_path, monkeypatch):
    p = write_audio(tmp_path / "s.flac", sine(1.5, 22050, channels=2), 22050)
    import soundfile as sf

    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    h = probe(str(p))
    assert (h.sample_rate, h.channels, h.frames) == (22050, 2, 33075)


def test_resample_removes_content_above_new_nyquist():
    x = sine(1.0, 44100, freq=12000.0)  # above 8 kHz Nyquist of 16 kHz
    y = resample(x, 44100, 16000)
    assert np.abs(y[500:-500]).max() < 0.02


def test_fft_resampler_matches_torchaudio_on_band_limited_signal():
    x = sine(1.0, 44100, freq=300.0) + sine(1.0, 44100, freq=2500.0, amp=0.2)
    a = resample(x, 44100, 16000)
    b = fft_resample(x, 44100, 16000)
    assert len(a) == len(b)
    assert np.abs(a[800:-800] - b[800:-800]).max() < 5e-3


def test_stereo_downmix_is_channel_mean(tmp_path):
    left = sine(1.0, 16000, freq=440.0, amp=0.4)
    right = sine(1.0, 16000, freq=880.0, amp=0.2)
    p = write_audio(tmp_path / "st.wav", np.stack([left, right], 1), 16000)
    y, info = load_mono(str(p), 16000)
    assert info["channels"] == 2 and y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=2 / 32768)


def test_bad_audio_reasons(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"nope" * 10)
    with pytest.raises(BadAudio, match="not decodable"):
        load_mono(str(tmp_path / "x.wav"), 16000)
    with pytest.raises(BadAudio, match="unreadable"):
        load_mono(str(tmp_path / "missing.wav"), 16000)


@pytest.mark.parametrize("n, clip, hop, pad, expected", [
    (10, 4, 4, False, [(0, 4), (4, 4)]),
    (10, 4, 4, True, [(0, 4), (4, 4), (8, 2)]),
    (8, 4, 4, True, [(0, 4), (4, 4)]),  # exact fit: no padded clip
    (3, 4, 4, True, [(0, 3)]),
    (3, 4, 4, False, []),
    (0, 4, 4, True, []),
    (10, 4, 2, False, [(0, 4), (2, 4), (4, 4), (6, 4)]),  # overlap; tail covered
    (11, 4, 2, True, [(0, 4), (2, 4), (4, 4), (6, 4), (8, 3)]),
])
def test_clip_spans(n, clip, hop, pad, expected):
    assert clip_spans(n, clip, hop, pad) == expected


def test_cut_zero_pads():
    a = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(cut(a, 8, 2, 4), [9, 10, 0, 0])


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_downmix_same_for_int16_and_float_decode_paths(tmp_path, subtype):
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.9, 0.9, (4000, 3)).astype(np.float32)
    p = write_audio(tmp_path / "m.wav", x, 16000, subtype=subtype)
    ref, _ = __import__("soundfile").read(str(p), dtype="float32")
    y, info = load_mono(str(p), 16000)
    assert info["channels"] == 3 and y.dtype == np.float32
    np.testing.assert_allclose(y, ref.mean(axis=1), atol=1e-6)
