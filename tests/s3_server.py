"""Test support, not part of the product: a real S3-compatible HTTP server on 127.0.0.1 (moto's
standalone server, which s3fs's own tests run against) and loopback ports, for the test-suite and the
storage benchmark (bench/storage.py). Needs the `test` extra (moto[server]).

`moto_server()` starts it on a free loopback port, points the standard AWS_* variables at it (so
fsspec/s3fs, boto3, pyarrow and every process started afterwards find it) and restores them when it
stops. The fixtures: one server per session (`s3_endpoint`); `s3_bucket` gives each test a fresh, empty
bucket URI.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Iterator

import fsspec
import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A loopback port free right now (the tests' servers and process groups bind to it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(start_timeout_s: float = 60) -> Iterator[str]:
    """Yields the endpoint URL of a running server; stops it (and restores AWS_*) afterwards."""
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto S3 server did not start on {url}") from None
                time.sleep(0.2)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def new_bucket(prefix: str = "test") -> str:
    """A fresh, empty bucket on the current endpoint: 's3://<prefix>-<random>'."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint):
    return new_bucket("test")
