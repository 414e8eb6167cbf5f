"""On-disk cache of compiled tier steps (AOTInductor packages), so a second generation from the
same weights starts sampling in seconds instead of recompiling for a minute.

A package is keyed by everything its code depends on: the tier's tensors (weights and step
constants are frozen into it), the shapes and flags it was built for, the device kind, the torch
version and the source of the step code itself, so a changed model, batch size or step function
never loads a stale package. Packages are written to a temp name and renamed (a reader never sees
half of one); a package that fails to load is recompiled and replaced.

Loading goes straight to the package loader, not through ``torch._inductor.aoti_load_package``: on a
CPU that call first probes which vector instruction sets the C++ compiler can target (one test build
and one Python subprocess importing torch per instruction set, ~10 s on 2 cores, with Inductor's
compile workers starting beside it), only to warn when the package was built for another one. The
key holds the CPU's capability instead, so a package built for AVX-512 is never looked up on an
AVX2-only machine sharing the cache directory.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import torch

ENV = "SASHIMI_COMPILE_CACHE"  # directory; "off" disables the cache
_CODE_MODULES = ("sashimi.tier_step", "sashimi.unet", "sashimi.blocks", "sashimi.s4", "sashimi.compile_cache")


def default_dir() -> Path | None:
    """$SASHIMI_COMPILE_CACHE, else $XDG_CACHE_HOME/sashimi/compiled (~/.cache/...); None if "off"."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sashimi" / "compiled"


def _code_fingerprint() -> bytes:
    h = hashlib.sha256(torch.__version__.encode())
    for name in _CODE_MODULES:
        h.update(inspect.getsource(sys.modules[name]).encode())
    return h.digest()


def key(module: torch.nn.Module, signature: tuple) -> str:
    """sha256 over the module's tensors (names, dtypes, shapes, bytes), ``signature``, the code and the
    CPU's vector capability (what the package's C++ was compiled for)."""
    h = hashlib.sha256(_code_fingerprint())
    h.update(repr((signature, torch.backends.cpu.get_cpu_capability())).encode())
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def load_or_build(path: Path, build: Callable[[str], None], log: Callable[[str], None] | None = None):
    """The loaded package at ``path``; ``build(tmp_path)`` writes it first when it is missing or broken."""
    if path.is_file():
        try:
            return load(path)
        except Exception as e:  # noqa: BLE001  (a truncated or foreign package: rebuild it)
            if log:
                log(f"compiled step {path} could not be loaded ({type(e).__name__}); compiling again")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        build(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return load(path)


def load(path: Path):
    """The compiled function in package ``path`` (milliseconds; see the module docstring for why not
    ``aoti_load_package``). The same loader and wrapper that call ends with, for the default model."""
    from torch.export.pt2_archive._package import AOTICompiledModel  # lazily: only generation with a cache needs it

    return AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1))
