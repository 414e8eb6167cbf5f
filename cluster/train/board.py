"""Rank-0 TensorBoard logging (Ray Train V2 has no logger callbacks: the train loop writes events).
The trainer logs scalars and the job; a task's hooks log what they make (the generate task: a clip and
its spectrogram at every evaluation)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from data_prep import storage


class Board:
    """Events go to `log_dir`; on object storage they are written to a local folder and uploaded under
    `log_dir` at every flush (each logging interval and checkpoint), so `tensorboard --logdir <URI>`
    (or a synced copy) shows the run while it trains."""

    def __init__(self, log_dir: str, purge_step: int | None):
        self.remote = str(log_dir) if storage.is_uri(log_dir) else None
        self._stage = tempfile.TemporaryDirectory(prefix="sashimi-tb-") if self.remote else None
        local = Path(self._stage.name if self._stage else log_dir)
        local.mkdir(parents=True, exist_ok=True)
        # purge_step drops events a crashed attempt wrote after the checkpoint we resumed from
        self.writer = SummaryWriter(str(local), purge_step=purge_step or None)
        self.local = local

    def scalars(self, values: dict, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def audio(self, tag: str, wave: torch.Tensor, step: int, sample_rate: int) -> None:
        """`wave`: 1-D, in [-1, 1]."""
        self.writer.add_audio(tag, wave.unsqueeze(0), step, sample_rate=sample_rate)

    def image(self, tag: str, image: torch.Tensor, step: int, dataformats: str = "CHW") -> None:
        """`image`: values in [0, 1]."""
        self.writer.add_image(tag, image, step, dataformats=dataformats)

    def flush(self) -> None:
        self.writer.flush()
        self._upload()

    def close(self) -> None:
        self.writer.close()
        self._upload()
        if self._stage is not None:
            self._stage.cleanup()

    def _upload(self) -> None:
        """Copy every local event file to the remote log dir (each upload replaces the object whole)."""
        if self.remote is None:
            return
        for f in sorted(self.local.rglob("*")):
            if f.is_file():
                storage.put_file(f, storage.join(self.remote, *f.relative_to(self.local).parts))
