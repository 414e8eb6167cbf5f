"""Edge cases found sharding a real folder: truncated WAVs, tiny files, tiny corpora, the paper's split."""
import csv
import struct

import numpy as np
import pytest
import soundfile as sf

from data_prep import shard_folder
from data_prep.cli import main
from data_prep.manifest import load_manifest
from data_prep.wavheader import declared_frames
from data_prep_fixtures import sine, write_audio, write_truncated_wav


def rejected_tsv(out) -> dict[str, str]:
    with open(out / "rejected.tsv", newline="") as f:
        return {r["path"]: r["reason"] for r in csv.DictReader(f, delimiter="\t")}


def quiet(**kw):
    return dict(workers=1, progress=False, **kw)


@pytest.fixture
def decoded(monkeypatch):
    """The relpaths decode_file was called on, in order (workers=1 decodes in this process)."""
    from data_prep import worker

    seen, real = [], worker._process

    def counting(task):
        seen.append(task.relpath)
        return real(task)

    monkeypatch.setattr(worker, "_process", counting)
    return seen


def test_declared_frames_reads_wav_and_aiff_headers(tmp_path):
    x = sine(0.5, 8000, channels=2)
    for name, fmt, sub in [("a.wav", "WAV", "PCM_16"), ("b.wav", "WAV", "FLOAT"), ("c.wav", "WAVEX", "PCM_24"),
                           ("d.rf64", "RF64", "PCM_16"), ("e.aiff", "AIFF", "PCM_16")]:
        write_audio(tmp_path / name, x, 8000, fmt=fmt, subtype=sub)
        assert declared_frames(str(tmp_path / name)) == 4000 == sf.info(str(tmp_path / name)).frames, name
    write_audio(tmp_path / "f.flac", x, 8000)
    assert declared_frames(str(tmp_path / "f.flac")) is None  # no frame promise to check
    cut = write_truncated_wav(tmp_path / "cut.wav", 4.0, keep_seconds=0.09)
    assert declared_frames(str(cut)) == 64000 and sf.info(str(cut)).frames == 1440
    # A streaming encoder's "unknown" data size (0xFFFFFFFF) is no promise: not called truncated.
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    assert raw[36:40] == b"data"
    raw[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "stream.wav").write_bytes(bytes(raw))
    assert declared_frames(str(tmp_path / "stream.wav")) is None


def test_truncated_wav_is_rejected_and_strict_fails(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write_audio(src / "ok.wav", sine(3.0, 16000), 16000)
    write_truncated_wav(src / "cut.wav", 60.0, keep_seconds=0.09)  # a minute promised, 0.09 s present
    m = shard_folder(src, out, "generic", clip_seconds=1.0, split=(1, 0, 0), **quiet())
    assert set(m["sources"]) == {"ok.wav"}
    reason = rejected_tsv(out)["cut.wav"]
    assert reason.startswith("truncated") and "960000 frames (60.000 s)" in reason and "1440 (0.090 s)" in reason
    argv = ["shard", str(src), str(tmp_path / "o2"), "--clip-seconds", "1", "--split", "1,0,0", "--quiet", "--workers", "1"]
    assert main(argv) == 0 and main(argv + ["--strict"]) == 1
    assert "cut.wav: truncated" in capsys.readouterr().err


def test_files_below_the_minimum_are_rejected_with_their_duration(tmp_path):
    src = tmp_path / "src"
    write_audio(src / "blip.wav", sine(0.05, 16000), 16000)
    write_audio(src / "short.wav", sine(1.9, 16000), 16000)  # just under a quarter of an 8 s clip
    write_audio(src / "ok.wav", sine(2.1, 16000), 16000)  # just over: kept, padded to one clip
    m = shard_folder(src, tmp_path / "out", "generic", split=(1, 0, 0), **quiet())
    assert m["params"]["min_seconds"] == 2.0 and {k: v["clips"] for k, v in m["sources"].items()} == {"ok.wav": 1}
    rej = rejected_tsv(tmp_path / "out")
    assert set(rej) == {"blip.wav", "short.wav"}
    assert rej["blip.wav"].startswith("too short: 0.050 s") and "minimum 2 s" in rej["blip.wav"]
    assert rej["short.wav"].startswith("too short: 1.900 s")
    # --min-seconds 0 restores padding every file into a clip; an explicit value overrides the preset
    m0 = shard_folder(src, tmp_path / "o0", "generic", split=(1, 0, 0), min_seconds=0, **quiet())
    assert set(m0["sources"]) == {"blip.wav", "short.wav", "ok.wav"} and not m0["rejected"]
    m1 = shard_folder(src, tmp_path / "o1", "generic", split=(1, 0, 0), min_seconds=1.0, **quiet())
    assert set(m1["sources"]) == {"short.wav", "ok.wav"}


def test_sc09_minimum_is_a_quarter_second(tmp_path):
    src = tmp_path / "sc09"
    write_audio(src / "one/a_nohash_0.wav", sine(0.2, 16000), 16000)
    write_audio(src / "one/b_nohash_0.wav", sine(0.37, 16000), 16000)  # the shortest real SC09 utterances
    m = shard_folder(src, tmp_path / "out", "sc09", split=(1, 0, 0), **quiet())
    assert set(m["sources"]) == {"one/b_nohash_0.wav"}
    assert rejected_tsv(tmp_path / "out")["one/a_nohash_0.wav"].startswith("too short: 0.200 s")


def five_files(src):
    for i in (1, 2, 3, 4, 5):
        write_audio(src / f"take{i}.wav", sine(1.0, 8000, freq=200 + 50 * i), 8000)


@pytest.mark.parametrize("order", ["natural", "random"])
def test_five_files_fill_every_split_and_the_summary_says_so(tmp_path, capsys, order):
    src, out = tmp_path / "src", tmp_path / "out"
    five_files(src)
    argv = ["shard", str(src), str(out), "--preset", "beethoven", "--sample-rate", "8000", "--clip-seconds", "0.5",
            "--split-order", order, "--quiet", "--workers", "1", "--strict"]
    assert main(argv) == 0
    m = load_manifest(out)
    assert [m["splits"][s]["files"] for s in ("train", "val", "test")] == [3, 1, 1] and m["warnings"] == []
    assert "train 3 file(s), val 1 file(s), test 1 file(s); every split with a non-zero fraction has >= 1 file" \
        in capsys.readouterr().out
    if order == "natural":  # contiguous in name order
        assert {k: v["split"] for k, v in m["sources"].items()} == {
            "take1.wav": "train", "take2.wav": "train", "take3.wav": "train", "take4.wav": "val", "take5.wav": "test"}


@pytest.mark.parametrize("order", ["natural", "random"])
def test_rejected_files_do_not_leave_a_split_empty(tmp_path, order, decoded, capsys):
    # In name order take6/take7 (unusable) would be val and test if splits were drawn over every file: the
    # header probe rejects them first, so the splits are drawn over the five usable files and each of those
    # is decoded exactly once (no rebuild); the rejected two are never decoded.
    src = tmp_path / "src"
    five_files(src)
    (src / "take6.wav").write_bytes(b"")
    write_truncated_wav(src / "take7.wav", 2.0, keep_seconds=0.7, sr=8000)
    m = shard_folder(src, tmp_path / "out", "youtube-mix", sample_rate=8000, clip_seconds=0.5, split_order=order,
                     workers=1, progress=False)
    assert [m["splits"][s]["files"] for s in ("train", "val", "test")] == [3, 1, 1] and m["warnings"] == []
    assert sorted(r["path"] for r in m["rejected"]) == ["take6.wav", "take7.wav"]  # each reported once
    reasons = rejected_tsv(tmp_path / "out")
    assert sorted(reasons) == ["take6.wav", "take7.wav"]
    assert "not decodable" in reasons["take6.wav"] and "truncated" in reasons["take7.wav"]
    assert sorted(decoded) == [f"take{i}.wav" for i in range(1, 6)]
    assert sum(m["splits"][s]["clips"] for s in m["splits"]) == 10 == sum(v["clips"] for v in m["sources"].values())
    assert main(["verify", str(tmp_path / "out"), "--quiet"]) == 0  # the shards match the manifest
    err = capsys.readouterr().err
    assert "again" not in err and err.count("[sashimi] rejected: ") == 2
    if order == "natural":  # contiguous in name order, over the usable files
        assert {k: v["split"] for k, v in m["sources"].items()} == {
            "take1.wav": "train", "take2.wav": "train", "take3.wav": "train", "take4.wav": "val", "take5.wav": "test"}


def test_files_only_decoding_rejects_are_split_again(tmp_path, decoded, capsys):
    """A float WAV with a NaN passes the header probe and is rejected only when decoded; if that empties a
    split, the usable files are split again and rebuilt (the one case a file is decoded twice)."""
    src = tmp_path / "src"
    five_files(src)
    for i in (6, 7):  # in name order: val and test
        nan = sine(1.0, 8000)
        nan[10] = np.nan
        write_audio(src / f"take{i}.wav", nan, 8000, subtype="FLOAT")
    m = shard_folder(src, tmp_path / "out", "youtube-mix", sample_rate=8000, clip_seconds=0.5, **quiet())
    assert [m["splits"][s]["files"] for s in ("train", "val", "test")] == [3, 1, 1] and m["warnings"] == []
    assert sorted(r["path"] for r in m["rejected"]) == ["take6.wav", "take7.wav"]
    assert all("NaN" in r["reason"] for r in m["rejected"])
    assert sorted(decoded) == sorted([f"take{i}.wav" for i in range(1, 8)] + [f"take{i}.wav" for i in range(1, 6)])
    assert "splitting the 5 usable file(s) again and rebuilding" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "out"), "--quiet"]) == 0


def test_fewer_than_three_files_warn_naming_the_empty_split(tmp_path, capsys):
    src = tmp_path / "src"
    write_audio(src / "a1.wav", sine(1.0, 8000), 8000)
    write_audio(src / "a2.wav", sine(1.0, 8000), 8000)
    base = ["shard", str(src), "--preset", "youtube-mix", "--sample-rate", "8000", "--clip-seconds", "0.5", "--quiet",
            "--workers", "1"]
    assert main(base[:2] + [str(tmp_path / "o2")] + base[2:]) == 0
    m = load_manifest(tmp_path / "o2")
    assert [m["splits"][s]["files"] for s in ("train", "val", "test")] == [1, 1, 0]
    assert len(m["warnings"]) == 1 and m["warnings"][0].startswith("split 'test' is empty")
    captured = capsys.readouterr()
    assert "warning: split 'test' is empty" in captured.err and "EMPTY: test" in captured.out
    assert main(base[:2] + [str(tmp_path / "o3")] + base[2:] + ["--strict"]) == 1  # strict: an empty split fails
    (src / "a2.wav").unlink()
    assert main(base[:2] + [str(tmp_path / "o1")] + base[2:]) == 0
    w = load_manifest(tmp_path / "o1")["warnings"]
    assert [x.split(" is empty")[0] for x in w] == ["split 'val'", "split 'test'"]
    assert "sashimi-train needs a non-empty val split" in w[0]
    assert main(["inspect", str(tmp_path / "o1")]) == 0
    assert "warning   split 'val' is empty" in capsys.readouterr().out


def test_paper_split_on_a_toy_folder(tmp_path):
    # Names in the style of the paper's folders; natural sort puts a2 before a10. 17 files:
    # train = first int(0.88*17) = 14, val = up to int(0.94*17) = 15, test = the last 2.
    src = tmp_path / "src"
    for i in np.random.default_rng(1).permutation(np.arange(1, 18)):
        write_audio(src / f"a{i}.wav", sine(0.5, 8000, freq=100 + 20 * int(i)), 8000)
    m = shard_folder(src, tmp_path / "out", "youtube-mix", sample_rate=8000, clip_seconds=0.5, **quiet())
    assert m["params"]["split_order"] == "natural" and m["split_source"] == "natural order"
    assert {k: v["split"] for k, v in m["sources"].items()} == {
        f"a{i}.wav": "train" if i <= 14 else "val" if i == 15 else "test" for i in range(1, 18)}
    r = shard_folder(src, tmp_path / "r", "youtube-mix", sample_rate=8000, clip_seconds=0.5, split_order="random",
                     seed=3, **quiet())
    assert r["params"]["split_order"] == "random" and r["split_source"] == "seed"
    assert [r["splits"][s]["files"] for s in ("train", "val", "test")] == [15, 1, 1]  # largest remainders
    assert shard_folder(src, tmp_path / "g", "generic", sample_rate=8000, clip_seconds=0.5, **quiet())["params"][
        "split_order"] == "random"  # generic keeps the seeded split
