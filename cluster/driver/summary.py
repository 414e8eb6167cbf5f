"""What `sashimi-train` does once the job is loaded: train it on Ray, let the task finish its part on
the driver (`Task.after_training`: a WAV sampled from the newest checkpoint, a classifier's test
result) and print where everything is."""
from __future__ import annotations

from ..checkpoint import load_checkpoint
from ..config import JobConfig
from ..logs import log
from ..rundir import RunDir
from ..tasks import DriverContext, task_of
from . import launch


def train_and_sample(job: JobConfig, where: str, fresh: bool = False, num_cpus: int | None = None,
                     write_wav: bool = True) -> dict:
    """Train `job` (resuming its run), then the task's closing work and the summary. Returns the run's
    facts and the summary lines as data."""
    info = launch.run(job, where, fresh=fresh, num_cpus=num_cpus)
    run_dir = RunDir(info.run_dir)
    lines = task_of(job).after_training(DriverContext(
        job=job, run_dir=run_dir, metrics=info.metrics, checkpoint_dir=info.checkpoint_dir,
        load_checkpoint=load_checkpoint, write_wav=write_wav))
    out = {"run_dir": info.run_dir, "tensorboard": info.tensorboard_dir, "checkpoint": info.checkpoint_dir,
           "metrics": info.metrics, "summary": lines}
    print_summary(out, run_dir)
    return out


def print_summary(out: dict, run_dir: RunDir) -> None:
    log.info("---- summary ----")
    for line in out["summary"]:
        log.info(line)
    m = out["metrics"]
    if "world_size" in m:
        log.info(f"workers at the end: {m['world_size']}; resizes {m.get('resizes', 0)}, reclaims "
                 f"{m.get('reclaims', 0)}, steps redone after restarts {m.get('steps_redone', 0)}")
    log.info(f"checkpoints: {run_dir.root}/checkpoint_step*  (latest {out['checkpoint']})")
    log.info(f"TensorBoard: tensorboard --logdir {run_dir.root} --host 127.0.0.1")
    log.info("resume: run the same command again; start over: add --fresh")
