"""Shared test setup: a project-local PyKeOps cache (compile once), deterministic seeds, a real S3
server on 127.0.0.1. Tests mirror the packages: sashimi/, data_prep/, cluster/ (each with its own
fixtures), and integration/ for the multi-process Ray runs (all marked slow)."""
import logging
import os
import pathlib
import random

import pytest
from s3_server import s3_bucket, s3_endpoint  # noqa: F401  (fixtures: a real S3 server on 127.0.0.1)

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("KEOPS_CACHE_FOLDER", str(ROOT / ".keops_cache"))
# Compiled generation steps are not kept between test runs (tests that check the cache pass a dir).
os.environ.setdefault("SASHIMI_COMPILE_CACHE", "off")


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def cluster_log():
    """The messages the cluster package logs during the test (its `[sashimi]` lines, without the prefix)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger("cluster")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
