"""sashimi-prep digits: SC09-layout corpora (tones without anything installed; espeak-ng when present),
their speaker-held-out lists, and their labels after sharding with the sc09 preset."""
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_prep import digits
from data_prep.cli import main
from data_prep.labelled import UnlabelledData, read_labelled_split
from data_prep.presets import SC09_WORDS
from data_prep.shard import PrepError, shard_folder


def _speaker(relpath: str) -> str:
    return relpath.split("/")[1].split("_nohash_")[0]


def test_tone_corpus_layout_lists_and_determinism(tmp_path):
    r = digits.make_digit_corpus(tmp_path / "a", per_digit=6, engine="tones", seed=3, progress=False)
    assert r["clips"] == 60 and sum(r["split_clips"].values()) == 60
    wavs = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.wav"))
    assert len(wavs) == 60
    for word in SC09_WORDS:
        assert sum(w.startswith(word + "/") for w in wavs) == 6
    info = sf.info(str(tmp_path / "a" / wavs[0]))
    assert (info.samplerate, info.frames, info.subtype, info.channels) == (16000, 16000, "PCM_16", 1)
    val = (tmp_path / "a" / "validation_list.txt").read_text().split()
    test = (tmp_path / "a" / "testing_list.txt").read_text().split()
    assert set(val) <= set(wavs) and set(test) <= set(wavs) and not set(val) & set(test)
    assert len(val) == r["split_clips"]["val"] and len(test) == r["split_clips"]["test"]
    train = set(wavs) - set(val) - set(test)
    # whole speakers are held out: no speaker has clips in two splits
    spk = [{_speaker(w) for w in ws} for ws in (train, val, test)]
    assert not (spk[0] & spk[1]) and not (spk[0] & spk[2]) and not (spk[1] & spk[2])
    digits.make_digit_corpus(tmp_path / "b", per_digit=6, engine="tones", seed=3, progress=False)
    for w in wavs + ["validation_list.txt", "testing_list.txt"]:
        assert (tmp_path / "a" / w).read_bytes() == (tmp_path / "b" / w).read_bytes()


def test_tone_clips_are_distinct_per_digit_and_varied_per_clip():
    clips = digits.plan_clips("tones", 2, seed=0)
    audio = {c: digits.render(c, "tones") for c in clips}
    for c, a in audio.items():
        assert a.shape == (16000,) and a.dtype == np.float32
        # the word is normalised to c.peak; the noise floor (>= 25 dB below it: std <= 0.056 peak) adds < 5 std
        assert 0.9 * c.peak <= np.abs(a).max() <= min(1.0, 1.3 * c.peak)
    # the dominant frequency at the start of the word identifies the digit's pitch step (d mod 5)
    def start_pitch(c, a):
        start = int(np.flatnonzero(np.abs(a) > 0.3 * np.abs(a).max())[0])
        seg = a[start:start + 1600] * np.hanning(1600)
        return np.argmax(np.abs(np.fft.rfft(seg, 16000))[100:2000]) + 100  # 1 Hz bins
    for c, a in audio.items():
        f0 = 250.0 * 2 ** ((c.digit % 5) / 2) * c.pitch / 100
        assert abs(start_pitch(c, a) - f0) < 0.12 * f0
    a, b = (audio[c] for c in clips if c.digit == 4)
    assert not np.allclose(a, b)


def test_sharded_corpus_carries_folder_labels_and_the_held_out_speakers(tmp_path):
    digits.make_digit_corpus(tmp_path / "src", per_digit=4, engine="tones", seed=0, progress=False)
    m = shard_folder(tmp_path / "src", tmp_path / "out", "sc09", workers=1, progress=False)
    assert m["split_source"] == "official lists"
    test_list = set((tmp_path / "src" / "testing_list.txt").read_text().split())
    assert {k for k, v in m["sources"].items() if v["split"] == "test"} == test_list
    n = 0
    for split in ("train", "val", "test"):
        x, y = read_labelled_split(tmp_path / "out", split)
        assert x.shape[1:] == (16000,) and x.dtype == np.float32 and y.dtype == np.int64
        n += len(y)
    assert n == 40
    x, y = read_labelled_split(tmp_path / "out", "train")
    # every label is the index of the folder word (sources are recorded in the manifest, labels in the json)
    by_label = {SC09_WORDS.index(k.split("/")[0]) for k, v in m["sources"].items() if v["split"] == "train"}
    assert set(y.tolist()) == by_label


def test_read_labelled_split_refuses_unlabelled_shards(tmp_path):
    src = tmp_path / "plain"
    src.mkdir()
    for i in range(3):
        sf.write(str(src / f"a{i}.wav"), np.zeros(16000, np.float32) + 0.1, 16000, subtype="PCM_16")
    shard_folder(src, tmp_path / "out", "generic", clip_seconds=1.0, split=(1.0, 0.0, 0.0), workers=1, progress=False)
    with pytest.raises(UnlabelledData, match="not a labelled audio clip"):
        read_labelled_split(tmp_path / "out", "train")


def test_refuses_a_used_folder_and_a_missing_espeak(tmp_path, monkeypatch, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    with pytest.raises(PrepError, match="not an empty folder"):
        digits.make_digit_corpus(tmp_path / "used", per_digit=1, engine="tones", progress=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PrepError, match="espeak-ng is not installed.*--engine tones"):
        digits.make_digit_corpus(tmp_path / "new", per_digit=1, engine="espeak", progress=False)
    assert not (tmp_path / "new").exists()  # nothing written
    assert main(["digits", str(tmp_path / "new2"), "--per-digit", "1"]) == 2
    assert "espeak-ng is not installed" in capsys.readouterr().err


def test_cli_writes_a_tone_corpus(tmp_path, capsys):
    assert main(["digits", str(tmp_path / "c"), "--engine", "tones", "--per-digit", "2", "--quiet"]) == 0
    assert "wrote 20 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "c").rglob("*.wav"))) == 20


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_espeak_corpus_speaks_each_digit(tmp_path):
    digits.make_digit_corpus(tmp_path / "e", per_digit=1, engine="espeak", seed=0, progress=False)
    for word in SC09_WORDS:
        (path,) = (tmp_path / "e" / word).glob("*.wav")
        a, sr = sf.read(str(path), dtype="float32")
        assert sr == 16000 and a.shape == (16000,)
        loud = np.flatnonzero(np.abs(a) > 0.1 * np.abs(a).max())
        assert 0.15 * sr < loud[-1] - loud[0] < sr  # a word of a plausible length, inside the second
