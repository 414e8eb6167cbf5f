"""Split by source file: deterministic from the seed, disjoint, proportional."""
import pytest

from data_prep.split import assign_splits, parse_fractions, split_counts


def test_deterministic_and_seed_dependent():
    paths = [f"d/{i:03d}.wav" for i in range(200)]
    a = assign_splits(paths, (0.88, 0.06, 0.06), seed=1)
    assert a == assign_splits(list(reversed(paths)), (0.88, 0.06, 0.06), seed=1)  # input order irrelevant
    assert a != assign_splits(paths, (0.88, 0.06, 0.06), seed=2)
    assert sorted(a) == sorted(paths)  # every file in exactly one split
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 176, "val": 12, "test": 12}


def test_small_corpus_gets_every_nonempty_split():
    assert split_counts(8, (0.88, 0.06, 0.06)) == [6, 1, 1]
    assert split_counts(2, (0.88, 0.06, 0.06)) == [2, 0, 0]
    assert split_counts(10, (1.0, 0.0, 0.0)) == [10, 0, 0]
    assert sum(split_counts(37, (0.5, 0.3, 0.2))) == 37


@pytest.mark.parametrize("bad", ["0.5,0.5", "a,b,c", "0.9,0.2,-0.1", "0.5,0.2,0.2"])
def test_parse_fractions_rejects(bad):
    with pytest.raises(ValueError):
        parse_fractions(bad)
