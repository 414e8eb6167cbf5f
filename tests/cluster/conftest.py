"""Fixtures of the cluster package's tests."""
import pytest


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything tries to start or join a Ray cluster (validation must come first).
    Ray is imported here, not at module level, so the Ray-free tests of this folder (e.g. the CUDA ones
    on a GPU machine without Ray) collect without it."""
    import ray

    from cluster.driver import launch

    def boom(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(launch, "connect_ray", boom)
    monkeypatch.setattr(ray, "init", boom)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The demo corpus as shards (tests/cluster_helpers.make_demo_shards), built once per test module. A
    module that needs other shards defines its own `shards`, which takes precedence."""
    from cluster_helpers import make_demo_shards

    return make_demo_shards(tmp_path_factory.mktemp("demo"))
