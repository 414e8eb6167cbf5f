"""Fixtures of the cluster package's tests."""
import pytest
import ray

from cluster.driver import launch


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything tries to start or join a Ray cluster (validation must come first)."""

    def boom(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(launch, "connect_ray", boom)
    monkeypatch.setattr(ray, "init", boom)
