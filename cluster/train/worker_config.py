"""What the driver hands every worker: the validated job and the data facts it read from the dataset's
manifest, as one frozen, typed object. It becomes plain data only at the Ray boundary (`to_dict`, and
`from_dict` in the worker), so the driver, the local runtime and the tests pass the object itself."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import JobConfig, job_from_dict


@dataclass(frozen=True)
class TrainData:
    """The shard lists and facts the driver read from the dataset's manifest (once)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    sample_rate: int | None  # stored in every checkpoint; None for pixel datasets
    test: tuple[str, ...] = ()  # scored after the last step by tasks that ask for it (Task.needs_test_split)
    test_split: str | None = None
    train_counts: tuple[int, ...] = ()  # samples per train shard (the manifest's): the global sample order


@dataclass(frozen=True)
class WorkerConfig:
    job: JobConfig
    data: TrainData

    def to_dict(self) -> dict:
        """Plain data for Ray's train_loop_config."""
        return {"job": self.job.to_dict(), "data": dataclasses.asdict(self.data)}

    @classmethod
    def from_dict(cls, raw: dict, where: str = "<job from driver>") -> "WorkerConfig":
        d = raw["data"]
        data = TrainData(tuple(d["train"]), tuple(d["val"]), d["sample_rate"], tuple(d["test"]), d["test_split"],
                         tuple(d["train_counts"]))
        return cls(job_from_dict(raw["job"], where), data)
