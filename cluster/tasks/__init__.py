"""Task plug-ins (cluster/tasks/base.py: the interface), by the name a job's `task:` gives. A new task
is a module here with a Task subclass, one entry in TASKS and its name in JobConfig.task's Literal; the
loop, the driver and the tools only ever call its hooks."""
from __future__ import annotations

from ..config import JobConfig
from .base import DriverContext, EvalContext, FinishContext, Task
from .classify import ClassifyTask
from .diffusion import DiffusionTask
from .generate import GenerateTask

TASKS: dict[str, type[Task]] = {"generate": GenerateTask, "classify": ClassifyTask, "diffusion": DiffusionTask}


def task_of(job: JobConfig) -> Task:
    """The plug-in for `job`, built for it."""
    return TASKS[job.task](job)


__all__ = ["DriverContext", "EvalContext", "FinishContext", "Task", "TASKS", "task_of"]
