"""Content-addressed, atomically written checkpoints.

A checkpoint's file name is the SHA-256 of its bytes, so an exploit only hands
the donor's key to the receiver (no bytes copied) and a damaged file is caught
on load. Files are written to a temp name and renamed, so a crash never leaves a
half-written checkpoint under a real name. Loading always uses
``weights_only=True``: a checkpoint can hold tensors and plain values only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .faults import crash_point

SUFFIX = ".pt"
log = logging.getLogger("torchpbt")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or holds something other than weights."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _canonical(obj: Any) -> Any:
    """Equal strings as one (interned) object: pickle writes a repeated object as a
    back-reference, so without this the same state could hash two ways depending on
    where its strings came from (a JSON round trip, a fresh process)."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if type(obj) in (dict, OrderedDict):
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        meta = getattr(obj, "_metadata", None)  # a module state_dict's version info
        if meta is not None:
            out._metadata = _canonical(meta)
        return out
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    return obj


def atomic_write(target: Path, data: bytes, *, durable: bool = False,
                 crash_at: str | None = None) -> None:
    """Write ``data`` to a temp file beside ``target`` and rename it over ``target``: a
    crash leaves the old file or the new one, never half of one (``durable``: fsync
    first, so a power loss does not either). ``crash_at`` names the fault-injection point
    between the write and the rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if crash_at:
            crash_point(crash_at)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointDir:
    """A directory of checkpoints named by content hash."""

    def __init__(self, path: str | os.PathLike[str], durable: bool = False) -> None:
        # fsync per checkpoint costs more than a short interval's bookkeeping; without it a
        # crashed *process* still never leaves a partial file (rename is atomic) and a
        # power loss is caught on load by the content hash.
        self.durable = durable
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, key: str) -> Path:
        return self.path / f"{key}{SUFFIX}"

    def save(self, state: Any) -> tuple[str, int]:
        """Write ``state``; return (key, size in bytes). Identical states share one file."""
        buf = io.BytesIO()
        torch.save(_canonical(state), buf)
        data = buf.getvalue()
        key = hashlib.sha256(data).hexdigest()
        target = self.file(key)
        if not self._intact(target, key):  # dedup, but a damaged copy is written afresh
            atomic_write(target, data, durable=self.durable, crash_at="checkpoint_write")
        return key, len(data)

    @staticmethod
    def _intact(target: Path, key: str) -> bool:
        try:
            return hashlib.sha256(target.read_bytes()).hexdigest() == key
        except FileNotFoundError:
            return False

    def load(self, key: str, map_location: str | torch.device = "cpu") -> Any:
        """Read and verify a checkpoint; never unpickles arbitrary objects."""
        target = self.file(key)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {key[:12]} is missing ({target})", key) from None
        if hashlib.sha256(data).hexdigest() != key:
            raise CheckpointError(f"checkpoint {key[:12]} is damaged: its content hash differs", key)
        try:
            return torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
        except Exception as exc:  # pickle refused by weights_only, or a torch format error
            raise CheckpointError(f"checkpoint {key[:12]} was refused: {exc}", key) from exc

    def keys(self) -> set[str]:
        return {p.name[: -len(SUFFIX)] for p in self.path.glob(f"*{SUFFIX}") if not p.name.startswith(".")}

    def delete(self, key: str) -> None:
        self.file(key).unlink(missing_ok=True)

    def collect_garbage(self, referenced: Iterable[str]) -> list[str]:
        """Delete every checkpoint and temp file not referenced; return deleted keys.

        Only call this while no worker is writing (before or after a run):
        a file a worker has just written is not referenced yet.
        """
        keep = set(referenced)
        gone = sorted(self.keys() - keep)
        for key in gone:
            self.delete(key)
        for tmp in self.path.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        return gone


class DeferredDeleter:
    """Deletes committed garbage in a background thread.

    An unlink can block for milliseconds (a busy journal, NFS) and the controller
    has nothing to wait for: the store already flags the file deleted. A key whose
    outcome names it again before its turn comes is *reclaimed*: its deletion is
    cancelled. The lock is not held during an unlink; a reclaim of the very key being
    unlinked waits for it to finish (and then finds it deleted). Each deletion is
    logged with ``clock()`` read *after* the unlink (the controller passes its count
    of tasks handed out): a task counted later cannot have seen the file. A key whose
    unlink fails is logged and skipped: its file stays, to be collected on resume.
    """

    threaded = True  # False: deletions wait for close() (tests use it to fix the timing)
    # True: delete() unlinks before it returns (the serial backend: deterministic, and no
    # interval is running that could have found the file and skipped writing its own)
    synchronous = False

    def __init__(self, checkpoints: CheckpointDir, clock: Callable[[], int] = lambda: 0) -> None:
        self.checkpoints, self.clock = checkpoints, clock
        self._deleted: list[tuple[int, str]] = []
        self._pending: set[str] = set()
        self._order: deque[str] = deque()
        self._unlinking: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closing = False

    def delete(self, keys: Iterable[str]) -> None:
        if self.synchronous:
            for key in keys:
                self._unlink(key)
            return
        with self._lock:
            for key in keys:
                if key not in self._pending:
                    self._pending.add(key)
                    self._order.append(key)
            self._wake.notify_all()
            if self.threaded and self._thread is None and self._order:
                self._thread = threading.Thread(target=self._work, name="torchpbt-gc",
                                                daemon=True)
                self._thread.start()

    def reclaim(self, key: str) -> bool:
        """Cancel ``key``'s deletion; True if it was pending (so its file is still there).
        False means it was never queued or is deleted, and logged for :meth:`drain`."""
        with self._lock:
            while self._unlinking == key:
                self._wake.wait()
            if key in self._pending:
                self._pending.discard(key)
                return True
            return False

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._order and not self._closing:
                    self._wake.wait()
                if not self._order:
                    return
                key = self._order.popleft()
                if key not in self._pending:  # reclaimed meanwhile
                    continue
                self._pending.discard(key)
                self._unlinking = key
            self._unlink(key)

    def _unlink(self, key: str) -> None:
        try:
            self.checkpoints.delete(key)
            done = True
        except OSError as exc:
            log.warning("could not delete unused checkpoint %s (%s); it is collected "
                        "when the run resumes", key[:12], exc)
            done = False
        with self._lock:
            if done:
                self._deleted.append((self.clock(), key))
            self._unlinking = None
            self._wake.notify_all()

    def drain(self) -> list[tuple[int, str]]:
        """The (clock, key) of each deletion done since the last call, oldest first."""
        with self._lock:
            out, self._deleted = self._deleted, []
            return out

    def close(self) -> None:
        """Finish every pending deletion (a run's end leaves only referenced files)."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        else:
            self._work()
        with self._lock:
            self._closing, self._thread = False, None
