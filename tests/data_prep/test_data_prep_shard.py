"""shard_folder and the CLI end to end: exact clip counts, split by file, sc09, determinism."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from data_prep import load_manifest, make_demo_corpus, shard_folder, shard_paths
from data_prep.cli import main
from data_prep.manifest import ManifestError
from data_prep.schema import decode_sample
from data_prep.tarshard import iter_tar_samples
from data_prep_fixtures import sine, write_audio

REPO = Path(__file__).resolve().parents[2]


def read_split(out, split):
    return [decode_sample(raw) for p in shard_paths(out, split) for raw in iter_tar_samples(p)]


def test_demo_shard_inspect_verify_via_cli(tmp_path):
    src, out = tmp_path / "demo", tmp_path / "out"
    exe = [sys.executable, "-m", "data_prep"]
    r = subprocess.run(exe + ["demo", str(src), "--minutes", "1.5"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    files = sorted(p for p in src.rglob("*") if p.is_file())
    infos = [sf.info(str(p)) for p in files]
    assert len(files) == 8 and {i.samplerate for i in infos} == {16000, 22050, 44100} and {i.channels for i in infos} == {1, 2}
    assert abs(sum(i.duration for i in infos) - 90) < 0.5

    r = subprocess.run(exe + ["shard", str(src), str(out), "--preset", "youtube-mix", "--clip-seconds", "2",
                              "--workers", "2", "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    m = load_manifest(out)
    assert m["preset"] == "youtube-mix" and m["params"]["clip_seconds"] == 2.0 and m["params"]["pad_last"] is False
    for rel, info in m["sources"].items():
        expected = int(round(sf.info(str(src / rel)).duration * 16000)) // 32000
        assert info["clips"] == expected, rel
    assert sum(s["clips"] for s in m["splits"].values()) == sum(v["clips"] for v in m["sources"].values())
    assert all(m["splits"][s]["files"] >= 1 for s in ("train", "val", "test"))

    r = subprocess.run(exe + ["inspect", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "16000 Hz" in r.stdout
    for s in ("train", "val", "test"):
        line = next(l for l in r.stdout.splitlines() if l.startswith(s))
        assert line.split()[2] == str(m["splits"][s]["clips"])
    assert main(["verify", str(out), "--quiet"]) == 0


def test_exact_clip_counts_padding_and_meta(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_audio(src / "a.wav", sine(2.5, 16000), 16000)  # 2 full + 1 padded (0.5 s)
    write_audio(src / "b.wav", sine(3.0, 16000, channels=2), 16000)  # 3 full, no padding
    write_audio(src / "sub/c.flac", sine(0.25, 16000), 16000)  # 1 padded
    m = shard_folder(src, out, "generic", clip_seconds=1.0, split=(1, 0, 0), workers=1, progress=False)
    assert m["clip_samples"] == 16000
    assert {k: v["clips"] for k, v in m["sources"].items()} == {"a.wav": 3, "b.wav": 3, "sub/c.flac": 1}
    samples = read_split(out, "train")
    assert len(samples) == 7 == m["splits"]["train"]["clips"]
    by = {(s.meta["source"], s.meta["clip"]): s for s in samples}
    assert by[("a.wav", 2)].length == 8000 and by[("a.wav", 2)].meta["start"] == 32000
    assert not by[("a.wav", 2)].data[8000:].any()
    assert by[("sub/c.flac", 0)].length == 4000
    assert all(s.length == 16000 for k, s in by.items() if k[0] == "b.wav")
    assert m["splits"]["train"]["seconds"] == pytest.approx(2.5 + 3.0 + 0.25)
    # Clip 1 of a.wav holds exactly the source samples 16000..32000.
    np.testing.assert_allclose(by[("a.wav", 1)].data, sine(2.5, 16000)[16000:32000], atol=1 / 32768)
    assert m["splits"]["val"]["shards"] == [] and shard_paths(out, "val") == []

    # Drop-partial preset: the 0.5 s tail is dropped and c.flac is too short.
    m2 = shard_folder(src, tmp_path / "out2", "beethoven", clip_seconds=1.0, split=(1, 0, 0), workers=1, progress=False)
    assert {k: v["clips"] for k, v in m2["sources"].items()} == {"a.wav": 2, "b.wav": 3}
    assert [r["path"] for r in m2["rejected"]] == ["sub/c.flac"]


def test_split_is_by_file_disjoint_and_deterministic(tmp_path):
    src = tmp_path / "src"
    for i in range(20):
        write_audio(src / f"f{i:02d}.wav", sine(1.0 + 0.5 * (i % 3), 8000, freq=200 + 10 * i), 8000)
    kw = dict(sample_rate=8000, clip_seconds=0.5, split=(0.6, 0.2, 0.2), workers=1, progress=False)
    m1 = shard_folder(src, tmp_path / "o1", "generic", seed=7, **kw)
    m2 = shard_folder(src, tmp_path / "o2", "generic", seed=7, **kw)
    m3 = shard_folder(src, tmp_path / "o3", "generic", seed=8, **kw)
    split_of = {k: v["split"] for k, v in m1["sources"].items()}
    assert split_of == {k: v["split"] for k, v in m2["sources"].items()}
    assert split_of != {k: v["split"] for k, v in m3["sources"].items()}
    assert sorted(split_of.values()).count("val") == 4 and sorted(split_of.values()).count("test") == 4
    # Same bytes on a rebuild (deterministic tar headers and order).
    assert [s["sha256"] for s in m1["splits"]["train"]["shards"]] == [s["sha256"] for s in m2["splits"]["train"]["shards"]]
    seen = {}
    for split in ("train", "val", "test"):
        for s in read_split(tmp_path / "o1", split):
            assert s.meta["split"] == split == split_of[s.meta["source"]]
            seen.setdefault(s.meta["source"], set()).add(split)
    assert all(len(v) == 1 for v in seen.values()) and len(seen) == 20


def test_parallel_workers_give_identical_shards(tmp_path):
    src = tmp_path / "src"
    make_demo_corpus(src, minutes=0.5)
    kw = dict(clip_seconds=1.0, shard_max_mb=0.1, progress=False)
    m1 = shard_folder(src, tmp_path / "w1", "generic", workers=1, **kw)
    m2 = shard_folder(src, tmp_path / "w2", "generic", workers=2, **kw)
    assert len(m1["splits"]["train"]["shards"]) > 1  # rotation exercised
    for s in ("train", "val", "test"):
        assert m1["splits"][s]["shards"] == m2["splits"][s]["shards"]
    assert all(sh["bytes"] <= 0.1 * 2**20 for sh in m1["splits"]["train"]["shards"])


def test_webdataset_reads_shards_with_schema_decoder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_demo_corpus(src, minutes=0.3)
    m = shard_folder(src, out, "generic", clip_seconds=1.0, workers=1, progress=False)
    ds = wds.WebDataset(shard_paths(out, "train"), shardshuffle=False, empty_check=False).map(decode_sample)
    got = list(ds)
    assert len(got) == m["splits"]["train"]["clips"]
    assert all(s.data.shape == (16000,) and s.sample_rate == 16000 for s in got)


def test_sc09_labels_padding_and_official_lists(tmp_path):
    src = tmp_path / "sc09"
    for w, word in enumerate(["zero", "one", "nine"]):
        for j in range(3):
            write_audio(src / word / f"spk{j}_nohash_0.wav", sine(0.6 + 0.2 * j, 16000, freq=300 + 100 * w), 16000)
    write_audio(src / "yes/x_nohash_0.wav", sine(1.0, 16000), 16000)  # not a digit: skipped
    write_audio(src / "_background_noise_/noise.wav", sine(3.0, 16000), 16000)
    (src / "validation_list.txt").write_text("zero/spk0_nohash_0.wav\none/spk1_nohash_0.wav\n")
    (src / "testing_list.txt").write_text("nine/spk2_nohash_0.wav\n")
    m = shard_folder(src, tmp_path / "out", "sc09", workers=1, progress=False)
    assert m["split_source"] == "official lists" and m["skipped_files"] == 2
    assert {k: v["split"] for k, v in m["sources"].items() if v["split"] != "train"} == {
        "zero/spk0_nohash_0.wav": "val", "one/spk1_nohash_0.wav": "val", "nine/spk2_nohash_0.wav": "test"}
    samples = [s for sp in ("train", "val", "test") for s in read_split(tmp_path / "out", sp)]
    assert len(samples) == 9
    for s in samples:
        word = s.meta["source"].split("/")[0]
        assert s.label == {"zero": 0, "one": 1, "nine": 9}[word]
        assert s.data.shape == (16000,)
        j = int(s.meta["source"].split("/")[1][3])
        assert s.length == int(round((0.6 + 0.2 * j) * 16000))
    # Without the list files the split comes from the seed.
    (src / "validation_list.txt").unlink()
    (src / "testing_list.txt").unlink()
    m2 = shard_folder(src, tmp_path / "out2", "sc09", workers=1, progress=False)
    assert m2["split_source"] == "seed" and sum(v["files"] for v in m2["splits"].values()) == 9


def test_errors_exit_2_and_name_the_path(tmp_path, capsys):
    assert main(["shard", str(tmp_path / "nope"), str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["shard", str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert main(["inspect", str(tmp_path / "o")]) == 2
    assert "manifest.json" in capsys.readouterr().err
    (tmp_path / "o").mkdir(exist_ok=True)
    (tmp_path / "o/manifest.json").write_text("{broken")
    with pytest.raises(ManifestError, match="invalid JSON"):
        load_manifest(tmp_path / "o")
    (tmp_path / "o/manifest.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ManifestError, match="lacks keys"):
        shard_paths(tmp_path / "o", "train")
