"""Multi-process Ray runs (local clusters, simulated nodes, ray job submit): all slow; CI runs them."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
