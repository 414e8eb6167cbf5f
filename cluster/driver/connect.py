"""Joining Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a new local one whose
dashboard listens on 127.0.0.1 only."""
from __future__ import annotations

import os

import ray

FORWARD_ENV_PREFIXES = ("SASHIMI_",)  # test hooks and user knobs reach workers of a local cluster
LOOPBACK = "127.0.0.1"


def connect_ray(num_cpus: int | None = None) -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a local one bound to 127.0.0.1. True if we started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return False
    ray.init(**local_ray_init_kwargs(num_cpus))
    return True


def local_ray_init_kwargs(num_cpus: int | None = None) -> dict:
    """ray.init arguments for the local cluster we start: the dashboard on 127.0.0.1 only. (Ray Train's
    placement-group cleaner polls the state API, which lives in the dashboard; without it every run
    logs a warning a second.) Ray's own GCS/raylet gRPC servers listen on the node's address whatever
    ray.init is told (Ray resolves 127.0.0.1 to the routable IP on Linux); Ray 2.60 protects them
    with token auth."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV_PREFIXES)}
    # address="local": always a new cluster of our own; without it ray.init joins a stray local one
    # (e.g. left by `ray start`), which then refuses num_cpus
    return {"address": "local", "num_cpus": num_cpus, "include_dashboard": True, "dashboard_host": LOOPBACK,
            "runtime_env": {"env_vars": env} if env else None,
            "configure_logging": False}
