"""Where a run's files live, built in this one place:

    <checkpoint.storage>/<name>/
        checkpoint_step<9 digits>[-r<time>]/          (cluster/checkpoint/store.py)
            job.json, state.pt                       the job (the driver checks it), then the payload
        tensorboard/                                 rank 0's TensorBoard events
        samples/step<9 digits>.wav                   the WAV sashimi-train writes at the end
        test_result.json                             a classify run's final test accuracy
        FATAL.json                                   why the run stopped for good (cluster/train/stops.py)
        progress.json                                the last step logged (cluster/train/progress.py)

`checkpoint.storage` may be a URI (s3://..., any fsspec filesystem): Ray persists checkpoints there, and
everything this project writes itself (TensorBoard events, the WAV, the test result) goes there through
`data_prep.storage`.
"""
from __future__ import annotations

from dataclasses import dataclass

from data_prep.storage import join

TENSORBOARD = "tensorboard"
SAMPLES = "samples"
TEST_RESULT_FILE = "test_result.json"
FATAL_FILE = "FATAL.json"
PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class RunDir:
    root: str  # <storage>/<name>, as given (absolute path or URI)

    @classmethod
    def of(cls, storage: str, name: str) -> "RunDir":
        return cls(join(storage, name))

    @property
    def tensorboard(self) -> str:
        return join(self.root, TENSORBOARD)

    @property
    def fatal(self) -> str:
        return join(self.root, FATAL_FILE)

    @property
    def progress(self) -> str:
        return join(self.root, PROGRESS_FILE)

    @property
    def test_result(self) -> str:
        return join(self.root, TEST_RESULT_FILE)

    def sample_wav(self, step: int) -> str:
        return join(self.root, SAMPLES, f"step{step:09d}.wav")
