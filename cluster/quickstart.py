"""Train a job, then sample a WAV from its latest checkpoint and say where everything is.
`python -m cluster.quickstart` runs jobs/quickstart.yaml: demo corpus -> shards -> 2 CPU workers."""
from __future__ import annotations

import sys
from pathlib import Path

from .config import JobConfig

QUICKSTART_JOB = Path(__file__).resolve().parent.parent / "jobs" / "quickstart.yaml"


def write_sample_wav(checkpoint_dir: str, out_path: Path, n_samples: int, seed: int = 0) -> Path:
    """Generate `n_samples` from a checkpoint (model rebuilt from the config stored inside it) to a WAV."""
    import soundfile as sf
    import torch

    from sashimi.generate import generate

    from .checkpoint import load_model
    from .tboard import decode_tokens

    model, job = load_model(checkpoint_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with torch.no_grad():
        tokens = generate(model, n_samples, batch=1, seed=seed)[0]
    quant = job["data"]["quantization"]
    if quant == "none":
        raise ValueError("this checkpoint models pixels, not audio: no WAV to write")
    from data_prep.manifest import load_manifest

    try:
        sr = int(load_manifest(job["data"]["shards"])["sample_rate"])
    except Exception:  # dataset moved since training: fall back to the corpus default
        sr = 16000
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out_path), decode_tokens(tokens, quant).numpy(), sr, subtype="PCM_16")
    return out_path


def train_and_sample(job: JobConfig, where: str, fresh: bool = False, num_cpus: int | None = None,
                     write_wav: bool = True) -> dict:
    from .jobs import is_uri
    from .launch import run

    info = run(job, where, fresh=fresh, num_cpus=num_cpus)
    out = {"run_dir": info.run_dir, "tensorboard": info.tensorboard_dir, "checkpoint": info.checkpoint_dir,
           "metrics": info.metrics, "wav": None}
    if (write_wav and job.task == "generate" and info.checkpoint_dir and not is_uri(info.checkpoint_dir)
            and job.data.quantization != "none"):
        n = job.eval.generate_samples or 16000
        step = int(info.metrics.get("step", 0))
        wav = write_sample_wav(info.checkpoint_dir, Path(info.run_dir) / "samples" / f"step{step:09d}.wav", n,
                               seed=job.seed)
        out["wav"] = str(wav)
    print("\n[sashimi] ---- summary ----")
    if "val_nll_bits" in info.metrics:
        print(f"[sashimi] final val NLL: {info.metrics['val_nll_bits']:.4f} bits (step {info.metrics.get('step')})")
    if getattr(job, "task", None) == "classify":
        from .tasks import TEST_RESULT_FILE, read_test_result

        res = None if is_uri(info.run_dir) else read_test_result(info.run_dir, info.metrics.get("step"))
        out["test_result"] = res
        if res is not None:
            print(f"[sashimi] test accuracy {res['accuracy']:.4f} on {res['examples']} digits "
                  f"(split {res['split']!r}, step {res['step']}; {info.run_dir}/{TEST_RESULT_FILE})")
        else:
            print("[sashimi] test accuracy: see the worker log above and test/accuracy in TensorBoard")
    print(f"[sashimi] checkpoints: {info.run_dir}/checkpoint_step*  (latest {info.checkpoint_dir})")
    print(f"[sashimi] TensorBoard: tensorboard --logdir {info.run_dir} --host 127.0.0.1")
    if out["wav"]:
        print(f"[sashimi] generated WAV: {out['wav']}")
    print(f"[sashimi] resume: run the same command again; start over: add --fresh", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    job = "jobs/quickstart.yaml" if Path("jobs/quickstart.yaml").is_file() else str(QUICKSTART_JOB)
    return cli_main([job, *argv])


if __name__ == "__main__":
    sys.exit(main())
