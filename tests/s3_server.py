"""Test fixtures for a real S3 server on 127.0.0.1 (data_prep.local_s3): one server per session,
with the AWS_* variables pointing at it; ``s3_bucket`` gives each test a fresh, empty bucket URI."""
from __future__ import annotations

import pytest

from data_prep.local_s3 import moto_server, new_bucket


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint):
    return new_bucket("test")
