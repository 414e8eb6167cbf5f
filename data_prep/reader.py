"""The one way shards are read back: training streams, validation, ``sashimi-eval`` and the MNIST demos.

Shard bytes go through ``data_prep.tarshard.iter_tar_samples`` (members only ever read into memory: never
extracted, never unpickled, unsafe names refused) and samples through ``data_prep.schema.decode_sample``.
What happens to a bad shard or sample is one ``BadSamplePolicy``: log it once and skip it ("skip"), or
raise ``BadDataError`` naming the shard ("stop"). Torch-free (numpy and soundfile only), so it serves
tools that never build a model.

``open_tar`` is the single place a shard path is opened; a filesystem layer for URIs belongs there.
"""
from __future__ import annotations

import tarfile
from typing import Iterable, Iterator

from .logs import log
from .schema import Sample, SampleError, decode_sample
from .tarshard import iter_tar_samples

MAX_BAD_IN_A_ROW = 1000  # skipping never spins forever: this many bad items without a good sample is fatal
# What an unreadable shard raises while it is read: truncated or garbage tar, I/O errors, unsafe or
# malformed members (TarMemberError is a ValueError).
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)

open_tar = iter_tar_samples  # url -> raw {"__key__", "__url__", ext: bytes} dicts of one shard


class BadDataError(RuntimeError):
    """A bad shard or sample under on_bad_sample=stop, or nothing decodable at all; names the shard.
    str() is the message alone, even where a data loader appends to args."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadSamplePolicy:
    """``data.on_bad_sample`` for one reader: `tar_error` handles a shard that cannot be read (the rest
    of it is skipped), `sample_error` a sample that fails to decode. Each distinct problem is logged once
    per process; repeats are only counted."""

    def __init__(self, mode: str = "skip", max_in_a_row: int | None = None):
        if mode not in ("skip", "stop"):
            raise ValueError(f"data.on_bad_sample must be 'skip' or 'stop', got {mode!r}")
        self.mode = mode
        self.max_in_a_row = MAX_BAD_IN_A_ROW if max_in_a_row is None else max_in_a_row
        self.skipped, self.in_a_row, self.seen = 0, 0, set()
        self.last: str | None = None  # the latest problem skipped

    def _skip(self, what: str) -> None:
        self.last = what
        self.skipped += 1
        self.in_a_row += 1
        if what not in self.seen and len(self.seen) < 1000:
            self.seen.add(what)
            log.info(f"data: skipping {what} (data.on_bad_sample=skip)")
        if self.in_a_row >= self.max_in_a_row:
            raise BadDataError(f"{self.in_a_row} bad shards/samples in a row and no good sample, last: {what}; "
                               f"check the shard directory with `sashimi-prep verify`")

    def tar_error(self, url: str, exn: BaseException) -> None:
        self._unreadable(url, exn, "unreadable tar", "rest of shard {url}: unreadable tar")

    def read_error(self, url: str, exn: BaseException) -> None:
        """One sample of shard `url` could not be read (a ranged read past a truncated shard's end, an
        I/O error): the other samples of the shard stay usable."""
        self._unreadable(url, exn, "unreadable sample", "unreadable sample in shard {url}")

    def _unreadable(self, url: str, exn: BaseException, what: str, skipped: str) -> None:
        """Stop (data.on_bad_sample=stop) or skip and count, naming the shard, `what` failed and why."""
        msg = str(exn.args[0]) if getattr(exn, "args", None) else str(exn)
        if self.mode == "stop":
            raise BadDataError(f"shard {url}: {what} ({type(exn).__name__}: {msg[:300]}); "
                               f"data.on_bad_sample=stop") from exn
        self._skip(f"{skipped.format(url=url)} ({type(exn).__name__}: {msg[:200]})")

    def sample_error(self, raw: dict, exn: SampleError) -> None:
        shard = raw.get("__url__", "<unknown shard>")
        if self.mode == "stop":
            raise BadDataError(f"shard {shard}: {exn}; data.on_bad_sample=stop") from exn
        self._skip(f"bad sample in shard {shard}: {exn}")

    def good(self) -> None:
        """A good sample arrived: the count of bad ones in a row starts again."""
        self.in_a_row = 0

    def decode(self, raw: dict) -> Sample | None:
        """decode_sample(raw), or None after handling a SampleError per the policy."""
        try:
            sample = decode_sample(raw)
        except SampleError as e:
            self.sample_error(raw, e)
            return None
        self.good()
        return sample


def raw_samples(urls: Iterable[str], policy: BadSamplePolicy) -> Iterator[dict]:
    """Raw member dicts of each shard in `urls`, in order; a shard that breaks off (truncated, garbage,
    unsafe member) yields what came before the break and goes to `policy.tar_error`."""
    for url in urls:
        try:
            yield from open_tar(url)
        except TAR_ERRORS as e:
            policy.tar_error(str(url), e)


def samples(urls: Iterable[str], policy: BadSamplePolicy) -> Iterator[tuple[dict, Sample]]:
    """(raw, decoded Sample) for every good sample of `urls`, in shard order."""
    for raw in raw_samples(urls, policy):
        sample = policy.decode(raw)
        if sample is not None:
            yield raw, sample
