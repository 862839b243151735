"""Backends run member intervals; the controller makes every decision."""

from __future__ import annotations

import contextlib
import os

from .base import Backend
from .local import LocalBackend
from .local_pool import WorkerSet
from .ray import RayBackend, import_ray
from .serial import SerialBackend
from .worker import ClassRef, IntervalRunner, Outcome, Task, derive_seed, load_module_from_path


def resolve_devices(devices: str | list[str] | None) -> list[str]:
    """``None``/"cpu" → ["cpu"]; "auto" → every CUDA device, else CPU; a list is kept."""
    import torch

    if devices is None or devices == "cpu":
        return ["cpu"]
    if devices == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    if isinstance(devices, str):
        devices = [devices]
    out = []
    for d in devices:
        try:
            dev = torch.device(d)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"devices: {d!r} is not a torch device; use 'cpu', 'cuda:0', ... or 'auto'."
            ) from None
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (dev.index or 0) >= n:
                visible = [f"cuda:{i}" for i in range(n)]
                raise ValueError(
                    f"devices: {d!r} is not available here ({n} CUDA device(s)); use 'cpu', "
                    f"'auto'{' or one of ' + str(visible) if visible else ''}."
                )
        out.append(str(d))
    if not out:
        raise ValueError("devices=[] names no device; use 'cpu' or 'auto'.")
    return out


BACKENDS = ("serial", "local", "workers", "ray", "vectorized")


def check_backend(kind: object) -> str:
    """A known backend name whose packages are installed; checked before any work."""
    if kind not in BACKENDS:
        raise ValueError(f"backend={kind!r}: use 'serial', 'local', 'workers', 'ray' or "
                         "'vectorized', or pass a torchpbt.backends.Backend instance.")
    if kind == "ray":
        import_ray()
    return str(kind)


def start_workers(kind: str, member_cls: type, workers: int,
                  devices: list[str]) -> contextlib.AbstractContextManager[WorkerSet | None]:
    """The local backend's processes, started now so they warm up while the run prepares
    (preflight, store); closed on leaving unless a backend adopted them."""
    if kind != "local":
        return contextlib.nullcontext()
    return WorkerSet(member_cls, workers, devices)


def make_backend(kind: str, member_cls: type, checkpoint_dir: str, workers: int,
                 devices: list[str], started: WorkerSet | None = None) -> Backend:
    if kind == "serial":
        return SerialBackend(member_cls, checkpoint_dir, devices[0])
    if kind == "vectorized":  # workers is the population: one slot per member
        from .vectorized.backend import VectorizedBackend

        return VectorizedBackend(member_cls, checkpoint_dir, workers, devices[0])
    if kind == "ray":
        return RayBackend(member_cls, checkpoint_dir, workers, devices)
    return LocalBackend(member_cls, checkpoint_dir, workers, devices, started=started)


def default_workers() -> int:
    return os.cpu_count() or 1


__all__ = [
    "BACKENDS", "Backend", "ClassRef", "IntervalRunner", "LocalBackend", "Outcome", "RayBackend",
    "SerialBackend", "Task", "WorkerSet", "check_backend", "default_workers", "derive_seed",
    "load_module_from_path", "make_backend", "resolve_devices", "start_workers",
]
