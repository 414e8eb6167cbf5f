"""What `sashimi-train` does once the job is loaded: train it on Ray, write a WAV sampled from the
latest checkpoint (generate jobs on local storage), and print where everything is."""
from __future__ import annotations

import soundfile as sf
import torch

from data_prep import storage
from sashimi.generate import generate

from . import launch
from .checkpoint import load_checkpoint
from .config import JobConfig
from .rundir import TEST_RESULT_FILE, RunDir
from .tasks import read_test_result
from .tboard import decode_tokens


def write_sample_wav(checkpoint_dir: str, out_path: str, n_samples: int, seed: int = 0) -> str:
    """Generate `n_samples` from a checkpoint (model, quantisation and sample rate all from it) to a WAV
    (a local path or a URI)."""
    model, job, quant, rate, _ = load_checkpoint(checkpoint_dir)
    if quant == "none":
        raise ValueError(f"{checkpoint_dir}: this checkpoint models pixels, not audio: no WAV to write")
    with torch.no_grad():
        tokens = generate(model, n_samples, batch=1, seed=seed)[0]
    wave = decode_tokens(tokens, quant).numpy()
    return storage.atomic_write(out_path, lambda f: sf.write(f, wave, rate, format="WAV", subtype="PCM_16"))


def train_and_sample(job: JobConfig, where: str, fresh: bool = False, num_cpus: int | None = None,
                     write_wav: bool = True) -> dict:
    """Train `job` (resuming its run), then the WAV and the summary. Returns what was printed as data."""
    info = launch.run(job, where, fresh=fresh, num_cpus=num_cpus)
    run_dir = RunDir(info.run_dir)
    out = {"run_dir": info.run_dir, "tensorboard": info.tensorboard_dir, "checkpoint": info.checkpoint_dir,
           "metrics": info.metrics, "wav": None}
    if write_wav and job.task == "generate" and info.checkpoint_dir and job.data.quantization != "none":
        step = int(info.metrics.get("step", 0))
        out["wav"] = write_sample_wav(info.checkpoint_dir, run_dir.sample_wav(step),
                                      job.eval.generate_samples or 16000, seed=job.seed)
    if getattr(job, "task", None) == "classify":
        out["test_result"] = read_test_result(run_dir, info.metrics.get("step"))
    print_summary(out, run_dir)
    return out


def print_summary(out: dict, run_dir: RunDir) -> None:
    m = out["metrics"]
    print("\n[sashimi] ---- summary ----")
    if "val_nll_bits" in m:
        print(f"[sashimi] final val NLL: {m['val_nll_bits']:.4f} bits (step {m.get('step')})")
    if "test_result" in out:
        res = out["test_result"]
        if res is not None:
            print(f"[sashimi] test accuracy {res['accuracy']:.4f} on {res['examples']} digits "
                  f"(split {res['split']!r}, step {res['step']}; {run_dir.root}/{TEST_RESULT_FILE})")
        else:
            print("[sashimi] test accuracy: see the worker log above and test/accuracy in TensorBoard")
    print(f"[sashimi] checkpoints: {run_dir.root}/checkpoint_step*  (latest {out['checkpoint']})")
    print(f"[sashimi] TensorBoard: tensorboard --logdir {run_dir.root} --host 127.0.0.1")
    if out["wav"]:
        print(f"[sashimi] generated WAV: {out['wav']}")
    print("[sashimi] resume: run the same command again; start over: add --fresh", flush=True)
