"""A corpus of broken files: each bad one is reported with a reason, every good one fully sharded."""
import csv

import pytest

from data_prep.cli import main
from data_prep.manifest import load_manifest
from data_prep_fixtures import build_bad_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("badcorpus")
    good, bad = build_bad_corpus(root)
    return root, good, bad


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_reported_good_files_kept(corpus, tmp_path, capsys, workers):
    root, good, bad = corpus
    out = tmp_path / "out"
    argv = ["shard", str(root), str(out), "--preset", "youtube-mix", "--clip-seconds", "1", "--quiet", "--workers", str(workers)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    m = load_manifest(out)
    assert {k: v["clips"] for k, v in m["sources"].items()} == good
    with open(out / "rejected.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    reasons = {r["path"]: r["reason"] for r in rows}
    assert set(reasons) == set(bad)
    for rel, why in bad.items():
        assert why in reasons[rel], (rel, reasons[rel])
        assert f"{rel}: " in err  # reported on the console too, with the path
    assert m["ignored_files"] == 1  # README.txt
    assert main(["verify", str(out), "--quiet"]) == 0


def test_strict_exits_nonzero_but_still_writes(corpus, tmp_path):
    root, good, _ = corpus
    out = tmp_path / "strict"
    assert main(["shard", str(root), str(out), "--preset", "youtube-mix", "--clip-seconds", "1", "--quiet", "--workers", "1", "--strict"]) == 1
    assert {k: v["clips"] for k, v in load_manifest(out)["sources"].items()} == good


def test_strict_passes_on_clean_corpus(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "clean"
    assert main(["shard", str(root / "good"), str(out), "--clip-seconds", "1", "--quiet", "--workers", "1", "--strict"]) == 0
    assert (out / "rejected.tsv").read_text() == "path\treason\n"


def test_all_bad_is_an_error(corpus, tmp_path, capsys):
    root, _, _ = corpus
    assert main(["shard", str(root / "bad"), str(tmp_path / "o"), "--preset", "beethoven", "--clip-seconds", "1", "--quiet", "--workers", "1"]) == 2
    assert "none of the" in capsys.readouterr().err
    assert not (tmp_path / "o/manifest.json").exists() and (tmp_path / "o/rejected.tsv").exists()
