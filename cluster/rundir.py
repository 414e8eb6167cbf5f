"""Where a run's files live, built in this one place:

    <checkpoint.storage>/<name>/
        checkpoint_step<9 digits>[-r<time>]/state.pt   (cluster.checkpoint.store)
        tensorboard/                                 rank 0's TensorBoard events
        samples/step<9 digits>.wav                   the WAV sashimi-train writes at the end
        test_result.json                             a classify run's final test accuracy

`checkpoint.storage` may be a URI (Ray persists checkpoints there); `local` is then None and the
files this project writes itself (TensorBoard, WAV, test result) are not written or read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TENSORBOARD = "tensorboard"
SAMPLES = "samples"
TEST_RESULT_FILE = "test_result.json"


def is_uri(path: str) -> bool:
    return "://" in str(path)


@dataclass(frozen=True)
class RunDir:
    root: str  # <storage>/<name>, as given (absolute path or URI)

    @classmethod
    def of(cls, storage: str, name: str) -> "RunDir":
        return cls(f"{str(storage).rstrip('/')}/{name}")

    @property
    def local(self) -> Path | None:
        """The run dir as a local Path, or None on remote storage."""
        return None if is_uri(self.root) else Path(self.root)

    @property
    def tensorboard(self) -> str:
        return f"{self.root}/{TENSORBOARD}"

    @property
    def test_result(self) -> str:
        return f"{self.root}/{TEST_RESULT_FILE}"

    def sample_wav(self, step: int) -> str:
        return f"{self.root}/{SAMPLES}/step{step:09d}.wav"
