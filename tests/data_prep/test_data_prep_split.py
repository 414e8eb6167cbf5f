"""Split by source file: seeded random or the paper's natural-sorted contiguous 88/6/6; disjoint, proportional."""
import numpy as np
import pytest

from data_prep.split import assign_splits, natural_key, paper_counts, parse_fractions, split_counts


def test_deterministic_and_seed_dependent():
    paths = [f"d/{i:03d}.wav" for i in range(200)]
    a = assign_splits(paths, (0.88, 0.06, 0.06), seed=1)
    assert a == assign_splits(list(reversed(paths)), (0.88, 0.06, 0.06), seed=1)  # input order irrelevant
    assert a != assign_splits(paths, (0.88, 0.06, 0.06), seed=2)
    assert sorted(a) == sorted(paths)  # every file in exactly one split
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 176, "val": 12, "test": 12}


def test_small_corpus_gets_every_nonempty_split():
    for counts in (split_counts, paper_counts):
        assert counts(8, (0.88, 0.06, 0.06)) == [6, 1, 1]
        assert counts(5, (0.88, 0.06, 0.06)) == [3, 1, 1]  # the real five-file folder: val was empty
        assert counts(3, (0.88, 0.06, 0.06)) == [1, 1, 1]
        assert counts(2, (0.88, 0.06, 0.06)) == [1, 1, 0]  # too few: train first, then val (training needs it)
        assert counts(1, (0.88, 0.06, 0.06)) == [1, 0, 0]
        assert counts(10, (1.0, 0.0, 0.0)) == [10, 0, 0]
        assert counts(4, (0.5, 0.0, 0.5)) == [2, 0, 2]  # a zero fraction stays empty
        assert sum(counts(37, (0.5, 0.3, 0.2))) == 37


def test_paper_counts_use_the_papers_boundaries():
    # files[:int(0.88 n)], files[int(0.88 n):int(0.94 n)], files[int(0.94 n):]: for YouTubeMix's 241 files
    # that is 212/14/15, where largest remainders would give 212/15/14.
    assert paper_counts(241, (0.88, 0.06, 0.06)) == [212, 14, 15]
    assert split_counts(241, (0.88, 0.06, 0.06)) == [212, 15, 14]
    assert paper_counts(50, (0.88, 0.06, 0.06)) == [44, 3, 3]


def test_natural_key_orders_numbers_by_value():
    names = ["a10.wav", "a2.wav", "a1.wav", "b.wav", "a02.wav", "x/a9.wav", "a1b10.wav", "a1b9.wav"]
    assert sorted(names, key=natural_key) == ["a1.wav", "a1b9.wav", "a1b10.wav", "a02.wav", "a2.wav", "a10.wav",
                                              "b.wav", "x/a9.wav"]


def test_natural_split_is_contiguous_and_seed_free():
    names = [f"a{i}.wav" for i in np.random.default_rng(0).permutation(np.arange(1, 51))]
    a = assign_splits(names, (0.88, 0.06, 0.06), seed=1, order="natural")
    assert a == assign_splits(names[::-1], (0.88, 0.06, 0.06), seed=2, order="natural")
    # a1..a44 train, a45..a47 val, a48..a50 test (a lexicographic sort would put a10..a19 after a1)
    assert a == {f"a{i}.wav": "train" if i <= 44 else "val" if i <= 47 else "test" for i in range(1, 51)}
    with pytest.raises(ValueError, match="'sorted'"):
        assign_splits(names, (0.88, 0.06, 0.06), seed=1, order="sorted")


@pytest.mark.parametrize("bad", ["0.5,0.5", "a,b,c", "0.9,0.2,-0.1", "0.5,0.2,0.2"])
def test_parse_fractions_rejects(bad):
    with pytest.raises(ValueError):
        parse_fractions(bad)
