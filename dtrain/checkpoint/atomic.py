"""Crash-safe checkpoint files: write to a temp file, fsync, rename, fsync the directory.

Each checkpoint `NAME` gets a sidecar `NAME.meta.json` holding the SHA-256 and size of the
bytes written. torch.load notices a truncated file (the zip central directory is missing) but
not a flipped byte inside a tensor (measured: it loads silently), so the hash is what catches
bit rot or a partial copy.

The file itself also ends with a trailer holding the SHA-256 and length of the torch.save bytes
before it (zip readers find their directory from the end and ignore what follows the archive;
torch.load reads such a file unchanged). A lost sidecar (crash between the two renames, a file
copied without it) is then no free pass: the trailer is checked instead. Only a file with
neither (written before the trailer existed) is trusted to torch.load alone.

Reading is torch.load(weights_only=True): a checkpoint holds tensors and plain values only
(dtrain/checkpoint/format.py), so opening one from someone else (`dtrain eval`, `analyze`, a
resume) never runs code from it. The only classes allowed besides are dtrain's config
dataclasses (plain data: `dtrain eval` accepts a `torch.save({"state_dict": ..., "cfg": cfg})`
file). A file that needs more (any other pickled Python object) is refused in one line, before
anything in it is executed.

Written by hand because torch.save has no atomic mode and torch.distributed.checkpoint writes a
directory of shards (and needs its own process group for async saves), which is more than a
single-writer DDP checkpoint needs.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dtrain import config
from dtrain.checkpoint.format import UnusableCheckpoint, upgrade
from dtrain.errors import DtrainError

META_SUFFIX = ".meta.json"
TEMP_MARKER = ".tmp-"  # temp files are ".{name}.tmp-{pid}" in the destination directory
_HASH_CHUNK = 8 << 20
TRAILER_MAGIC = b"dtrain-sha256-v1"
TRAILER_SIZE = len(TRAILER_MAGIC) + 32 + 8  # magic, SHA-256 of the payload, payload length (LE)
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Test-only hook for the fault tests (no tiny filesystem to fill there): with
# DTRAIN_TEST_DISK_FULL_FLAG=PATH in the environment, every checkpoint write fails with ENOSPC, as
# on a full disk, while the file PATH exists. A test fills "the disk" mid-run by creating PATH.
# Never set it in real runs.
TEST_DISK_FULL_ENV = "DTRAIN_TEST_DISK_FULL_FLAG"


class CorruptCheckpoint(DtrainError):
    """A checkpoint file exists but cannot be trusted (truncated, bad hash, unreadable pickle)."""


class UnsafeCheckpoint(UnusableCheckpoint):
    """A file that holds pickled Python objects: loading it would run code, so it is not loaded.
    Not corrupt (auto-resume does not rename it aside): written by other software."""


# The name torch's weights-only unpickler gives for what it refused, e.g. "GLOBAL evil.Payload".
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: )?GLOBAL ([\w.]+)")


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")


class _HashingWriter:
    """A file-like sink for torch.save that hashes and counts the bytes it writes to `fd`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha256 = hashlib.sha256()
        self.size = 0
        # torch.save's zip writer replaces an OSError from write() by its own RuntimeError when
        # it closes the archive; keep the original so a full disk is still recognised.
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        count = view.nbytes
        self.sha256.update(view)
        while view:  # os.write may write less than asked
            try:
                _test_disk_full()
                written = os.write(self.fd, view)
            except OSError as exc:
                self.error = self.error or exc
                raise
            view = view[written:]
        self.size += count
        return count

    def flush(self) -> None:  # os.write is unbuffered; fsync happens once at the end
        pass


def _test_disk_full() -> None:
    """See TEST_DISK_FULL_ENV."""
    flag = os.environ.get(TEST_DISK_FULL_ENV)
    if flag and os.path.exists(flag):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fsync_directory(directory: Path) -> None:
    """Make a rename durable. Some filesystems refuse fsync on a directory; that is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _out_of_space(directory: Path, exc: OSError) -> DtrainError:
    return DtrainError(
        f"no space left to write a checkpoint in {directory} ({exc.strerror}); the previous checkpoints "
        "are intact: free disk space, lower checkpoint.keep_last or set checkpoint.dir to another disk"
    )


def _write_bytes_atomically(path: Path, write: Any) -> dict[str, Any]:
    """Run `write(sink)` into a temp file beside `path`, fsync it and rename it onto `path`."""
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:  # no inode left is a full disk too
        if exc.errno in _OUT_OF_SPACE:
            raise _out_of_space(path.parent, exc) from None
        raise
    sink = _HashingWriter(fd)
    try:
        try:
            write(sink)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        # Never leave a half-written temp file behind; the old `path` is untouched.
        tmp.unlink(missing_ok=True)
        os_error = sink.error or (exc if isinstance(exc, OSError) else None)
        if os_error is not None and os_error.errno in _OUT_OF_SPACE:
            raise _out_of_space(path.parent, os_error) from None
        raise
    return {"sha256": sink.sha256.hexdigest(), "bytes": sink.size}


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    payload = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    _write_bytes_atomically(path, lambda sink: sink.write(payload))


def atomic_save(obj: Any, path: Path | str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """torch.save `obj` to `path` so that a crash at any moment leaves either the old or the new file.

    Returns the sidecar metadata (sha256, bytes, plus `meta`). Raises DtrainError naming the
    directory when the disk is full; the temp file is then removed and older files are untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = meta_path(path)
    # A stale sidecar of an older file with the same name must not describe the new bytes:
    # remove it first, so every crash point leaves (old, old), (old|new, none) or (new, new).
    sidecar.unlink(missing_ok=True)
    info = _write_bytes_atomically(path, lambda sink: _save_with_trailer(obj, sink))
    info.update(meta or {})
    info["file"] = path.name
    atomic_write_json(sidecar, info)
    fsync_directory(path.parent)
    return info


def _save_with_trailer(obj: Any, sink: _HashingWriter) -> None:
    # torch.save only calls write(); its type hint asks for a whole IO[bytes].
    torch.save(obj, sink)  # type: ignore[arg-type]
    payload_digest, payload_size = sink.sha256.digest(), sink.size
    sink.write(TRAILER_MAGIC + payload_digest + payload_size.to_bytes(8, "little"))


def _file_digest(path: Path, limit: int | None = None) -> Any:
    digest = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    with open(path, "rb") as handle:
        while remaining > 0 and (chunk := handle.read(min(_HASH_CHUNK, remaining))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest


def _verify_trailer(path: Path) -> None:
    """Check the digest the file carries itself; a file without a trailer is left to torch.load."""
    size = path.stat().st_size
    if size < TRAILER_SIZE:
        return
    with open(path, "rb") as handle:
        handle.seek(size - TRAILER_SIZE)
        trailer = handle.read(TRAILER_SIZE)
    if not trailer.startswith(TRAILER_MAGIC):
        return
    expected, length = trailer[len(TRAILER_MAGIC):-8], int.from_bytes(trailer[-8:], "little")
    if length != size - TRAILER_SIZE:
        raise CorruptCheckpoint(f"{path.name} has {size - TRAILER_SIZE} bytes before its trailer, "
                                f"the trailer says {length} (truncated?)")
    if _file_digest(path, length).digest() != expected:
        raise CorruptCheckpoint(f"{path.name} does not match the SHA-256 it carries (corrupted on disk)")


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None  # not a sidecar this code wrote


def verify(path: Path) -> None:
    """Raise CorruptCheckpoint when `path` disagrees with its sidecar (size, then SHA-256), or,
    without a sidecar, with the digest in its own trailer."""
    meta = read_meta(path)
    if meta is None:
        _verify_trailer(path)
        return
    size = path.stat().st_size
    if size != meta.get("bytes"):
        raise CorruptCheckpoint(f"{path.name} has {size} bytes, its sidecar says {meta.get('bytes')} (truncated?)")
    if _file_digest(path).hexdigest() != meta.get("sha256"):
        raise CorruptCheckpoint(f"{path.name} does not match the SHA-256 in its sidecar (corrupted on disk)")


def atomic_load(path: Path | str, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by atomic_save; any sign of damage raises CorruptCheckpoint, a
    file holding Python objects (which a plain torch.load would execute) UnsafeCheckpoint.

    The one way dtrain opens a checkpoint: resume, `dtrain eval`, the analyses, the benchmarks.
    """
    path = Path(path)
    if not path.is_file():
        raise DtrainError(f"checkpoint {path} does not exist; check checkpoint.resume / checkpoint.dir")
    verify(path)
    try:
        with torch.serialization.safe_globals([*_config_classes()]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # a damaged pickle stream
            raise CorruptCheckpoint(f"{path.name} cannot be read by torch.load: {_first_line(exc)}") from None
        found = _REFUSED_GLOBAL.search(str(exc))
        what = f"a Python object ({found.group(1)})" if found else "Python objects"
        raise UnsafeCheckpoint(
            f"{path} holds {what} that loading would have to run as code; dtrain reads only tensors and plain "
            "values (torch.load weights_only=True) and does not open it: it was not written by this dtrain") from None
    except Exception as exc:  # truncated zip, EOF: all mean "cannot trust this file"
        raise CorruptCheckpoint(f"{path.name} cannot be read by torch.load: {_first_line(exc)}") from None


@functools.cache
def _config_classes() -> tuple[type, ...]:
    """RunConfig and its sections: dataclasses of plain values, rebuilt without running code."""
    return tuple(obj for obj in vars(config).values()
                 if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == config.__name__)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def read_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint as every reader outside the resume path sees it (eval, the run record, the
    benchmarks): digest checked (atomic_load), then upgraded to the current format."""
    return upgrade(atomic_load(path, map_location=map_location), path)
