"""`ray job submit ... -- sashimi-train JOB.yaml` against a head node this test starts on 127.0.0.1.

The head gets its own --temp-dir, ports and auth token; teardown kills only processes whose command
line names that temp dir (never `ray stop`, which would hit other Ray instances on the machine)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster import checkpoint as ck
from cluster.checkpoint import store
from data_prep import storage
from cluster_helpers import REPO, make_demo_shards, tiny_job, write_job

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _pids_by_marker(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _kill_by_marker(marker: str) -> None:
    """SIGTERM, then SIGKILL after 10 s, every process whose command line contains `marker`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_by_marker(marker):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + 10
        while _pids_by_marker(marker) and time.time() < deadline:
            time.sleep(0.2)


@pytest.fixture
def head():
    with _started_head(os.environ) as h:
        yield h


@contextlib.contextmanager
def _started_head(base_env):
    temp = tempfile.mkdtemp(prefix="sray", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    gcs, dash, client, nm, om, agent, agent_grpc, metrics, rtenv = _free_ports(9)
    env = {**base_env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    cmd = [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={rtenv}", "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=true",
           "--disable-usage-stats"]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _kill_by_marker(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_and_resubmit_resumes(head, tmp_path):
    shards = make_demo_shards(tmp_path / "data")
    job = write_job(tmp_path / "submit.yaml", tiny_job(shards, tmp_path / "runs", "submitted",
                                                        training={"max_steps": 2}))

    def submit(*overrides):
        cmd = [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--working-dir", str(REPO),
               "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--",
               "sashimi-train", str(job), "--no-wav", *overrides]
        return subprocess.run(cmd, env=head["env"], cwd=REPO, capture_output=True, text=True, timeout=400)

    t0 = time.time()
    out = submit()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower() and "step 2/2" in log
    run_dir = tmp_path / "runs" / "submitted"
    assert store.load_state(ck.latest_checkpoint(run_dir))["step"] == 2
    # Ray does not retry jobs: re-submitting the same job name resumes from its checkpoint
    out = submit("training.max_steps=4")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "resumed from checkpoint at step 2" in log
    assert store.load_state(ck.latest_checkpoint(run_dir))["step"] == 4
    print(f"two submissions took {time.time() - t0:.0f} s")


def test_shipped_job_submitted_with_uri_overrides(s3_bucket, tmp_path):
    """jobs/quickstart.yaml as shipped, submitted from the project root to a loopback head, with data
    and storage given as URIs (the head and the job inherit the AWS_* variables of the S3 fixture)."""
    from data_prep.cli import main as prep_main
    from data_prep.demo import make_demo_corpus

    make_demo_corpus(tmp_path / "src", minutes=0.3, seed=0)
    data = f"{s3_bucket}/quickstart-data"
    assert prep_main(["shard", str(tmp_path / "src"), data, "--clip-seconds", "1", "--quiet"]) == 0
    head_env = {**os.environ}
    with _started_head(head_env) as h:
        overrides = [f"data.shards={data}", f"checkpoint.storage={s3_bucket}/runs", "data.crop=256",
                     "training.max_steps=2", "checkpoint.every=2", "eval.every=2", "eval.val_batches=1",
                     "eval.generate_samples=0", "scaling.num_workers=1", "model.d_model=8", "model.n_layers=1",
                     "model.d_state=8"]
        cmd = [str(BIN / "ray"), "job", "submit", "--address", h["address"], "--working-dir", ".",
               "--runtime-env", "jobs/runtime_env.yaml", "--", "sashimi-train", "jobs/quickstart.yaml", *overrides]
        out = subprocess.run(cmd, env=h["env"], cwd=REPO, capture_output=True, text=True, timeout=400)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower() and "step 2/2" in log
    assert store.load_state(ck.latest_checkpoint(f"{s3_bucket}/runs/quickstart"))["step"] == 2
    run = f"{s3_bucket}/runs/quickstart"
    assert f"latest checkpoint: {run}/{store.checkpoint_dir_name(2)}" in log  # the URI whole, scheme included
    assert storage.isfile(f"{run}/samples/step000000002.wav")  # the closing WAV, written to the bucket
    assert storage.listdir(f"{run}/tensorboard")
