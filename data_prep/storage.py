"""Paths and URIs through one filesystem layer, so shards, manifests, checkpoints and logs can live
on local disk, a shared POSIX mount, or an object store (s3://, gs://, any fsspec protocol).

A local path is handled exactly as before (pathlib, atomic rename). A URI is never treated as a
path: it goes to fsspec, whose s3 backend reads the endpoint and credentials from the standard
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, profiles), so
MinIO, Ceph or R2 work unchanged. Object stores have no rename: one object written in one PUT is
atomic (a reader sees all of it or nothing), and a multi-object artefact is complete when its
marker object (a dataset's manifest.json, a checkpoint's state.pt) exists, which is written last.
Credentials are never logged: errors name the URI and the failing operation only.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import fsspec

from .atomicio import atomic_write as _local_atomic_write

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Fail fast on a wrong endpoint instead of botocore's minutes of retries; reads of big shards still stream.
_S3_CONFIG = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}}


class StorageError(OSError):
    """A storage operation failed; the message names the URI (and the job key, where known)."""


def scheme(path: str | os.PathLike) -> str | None:
    """'s3' for 's3://b/k'; None for a local path (file:// URIs count as local)."""
    m = _SCHEME.match(str(path))
    if m is None or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def is_uri(path: str | os.PathLike) -> bool:
    return scheme(path) is not None


def local_path(path: str | os.PathLike) -> Path:
    """The local Path of a local path or file:// URI; a remote URI is refused, never mangled into a path."""
    s = str(path)
    if is_uri(s):
        raise StorageError(f"{s}: a remote URI where a local path is needed")
    return Path(s[len("file://"):] if s.lower().startswith("file://") else s)


def absolute(path: str | os.PathLike) -> str:
    """A URI as it is; a local path made absolute (what a report records, and what other processes can use)."""
    return str(path) if is_uri(path) else str(local_path(path).expanduser().resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path components: with '/' for URIs (keeping the scheme), os.path.join for local paths."""
    if is_uri(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return str(local_path(base).joinpath(*parts))


def filesystem(path: str | os.PathLike):
    """(fsspec filesystem, path inside it) for a URI."""
    s = str(path)
    proto = scheme(s)
    if proto is None:
        return fsspec.filesystem("file"), str(local_path(s))
    opts = {}
    if proto in ("s3", "s3a"):
        # The endpoint in the kwargs (not only in botocore's view of the environment) keys fsspec's
        # instance cache, so a changed AWS_ENDPOINT_URL never reuses a client for the old one.
        opts = {"config_kwargs": _S3_CONFIG, "client_kwargs": {"endpoint_url": os.environ.get("AWS_ENDPOINT_URL")}}
    return fsspec.core.url_to_fs(s, **opts)


def _wrap(op: str, path, exc: Exception) -> StorageError:
    return StorageError(f"{path}: {op} failed: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _remote(op: str, path, call: Callable):
    """``call(fs, path_in_fs)`` for a URI; any failure but a missing file becomes a StorageError naming
    the URI and the operation (endpoint down, credentials refused, ...)."""
    fs, p = filesystem(path)
    try:
        return call(fs, p)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _wrap(op, path, e) from e


def _fresh(fs, p: str):
    fs.invalidate_cache(p)  # another process (another node) may have written since
    return fs


def exists(path) -> bool:
    if not is_uri(path):
        return local_path(path).exists()
    return _remote("exists", path, lambda fs, p: fs.exists(p))


def isfile(path) -> bool:
    if not is_uri(path):
        return local_path(path).is_file()
    return _remote("stat", path, lambda fs, p: fs.isfile(p))


def isdir(path) -> bool:
    """A local directory, or a URI prefix holding at least one object (object stores have no folders)."""
    if not is_uri(path):
        return local_path(path).is_dir()
    return _remote("stat", path, lambda fs, p: _fresh(fs, p).isdir(p))


def mtime_ns(path) -> int:
    """Modification time in ns (0 when missing); an object's upload time on object stores."""
    if not is_uri(path):
        p = local_path(path)
        return p.stat().st_mtime_ns if p.exists() else 0
    try:
        info = _remote("stat", path, lambda fs, p: fs.info(p))
    except FileNotFoundError:
        return 0
    stamp = info.get("LastModified") or info.get("mtime") or info.get("updated")
    return int(stamp.timestamp() * 1e9) if hasattr(stamp, "timestamp") else int(float(stamp or 0) * 1e9)


def size(path) -> int:
    if not is_uri(path):
        return local_path(path).stat().st_size
    return int(_remote("stat", path, lambda fs, p: fs.size(p)))


def listdir(path) -> list[str]:
    """Names (not paths) directly under ``path``; [] when it does not exist."""
    if not is_uri(path):
        p = local_path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    entries = _remote("list", path, lambda fs, p: _fresh(fs, p).ls(p, detail=False) if fs.exists(p) else [])
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def open_read(path) -> BinaryIO:
    """A binary stream of ``path`` (streamed from an object store, not downloaded first)."""
    if not is_uri(path):
        return open(local_path(path), "rb")
    return _remote("open", path, lambda fs, p: fs.open(p, "rb"))


def read_bytes(path) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_range(path, start: int, end: int) -> bytes:
    """Bytes [start, end) of ``path``: one seek and read locally, one ranged GET on an object store."""
    if not is_uri(path):
        with open(local_path(path), "rb") as f:
            f.seek(start)
            return f.read(end - start)
    return _remote("ranged read", path, lambda fs, p: fs.cat_file(p, start=start, end=end))


def read_text(path) -> str:
    return read_bytes(path).decode("utf-8")


def atomic_write(path, write: Callable[[BinaryIO], object]) -> str:
    """Write ``path`` so that a reader sees the whole new content or none of it (see module doc)."""
    if not is_uri(path):
        return str(_local_atomic_write(local_path(path), write))
    # Staged in a local temp file and uploaded only once ``write`` has succeeded: an fsspec file
    # closed by an exception would upload what it had. One PUT (or a multipart upload, visible
    # only when completed) makes the object appear whole.
    with tempfile.NamedTemporaryFile(prefix="sashimi-upload-") as tmp:
        write(tmp)
        tmp.flush()
        _remote("write", path, lambda fs, p: fs.put_file(tmp.name, p))
    return str(path)


def write_bytes(path, data: bytes) -> str:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def put_file(local: str | os.PathLike, path) -> str:
    """Copy a local file to ``path`` (atomically, as ``atomic_write``)."""
    with open(local, "rb") as src:
        return atomic_write(path, lambda f: _copy(src, f))


def _copy(src: BinaryIO, dst: BinaryIO, chunk: int = 8 << 20) -> None:
    while block := src.read(chunk):
        dst.write(block)


def remove(path, recursive: bool = False) -> None:
    """Delete a file or (recursive) a directory / prefix; missing is fine."""
    if not is_uri(path):
        p = local_path(path)
        if p.is_dir() and recursive:
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        return
    _remote("delete", path, lambda fs, p: fs.rm(p, recursive=recursive) if fs.exists(p) else None)


def makedirs(path) -> None:
    """Local: mkdir -p. Object stores have no directories; only the bucket must exist (checked)."""
    if not is_uri(path):
        local_path(path).mkdir(parents=True, exist_ok=True)


def check_writable_root(path, key: str) -> None:
    """Fail now, naming ``key`` and the URI, if the bucket behind ``path`` is missing, the endpoint
    unreachable or the credentials refused — before any cluster resource is used."""
    if not is_uri(path):
        return
    fs, p = filesystem(path)
    bucket = p.split("/", 1)[0]
    try:
        fs.info(bucket)  # unlike exists(), raises on a refused connection or refused credentials
    except FileNotFoundError:
        raise StorageError(f"{key}: {path}: bucket {bucket!r} does not exist "
                           "(or these credentials cannot see it)") from None
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{key}: {path}: cannot reach the bucket {bucket!r}: {type(e).__name__}: "
                           f"{_first_line(e)} (endpoint and credentials come from AWS_ENDPOINT_URL, "
                           "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)") from e
