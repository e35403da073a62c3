"""torch's CPU thread count, changed for one measurement without disturbing the rest of the process.

`torch.set_num_threads` changes the calling thread and the count every later thread starts with. A server
runs each session in threads of its own, so two measurements that each save and restore "the current count"
can leave every later session on one thread. Here every change is serialised, and always undone to the
process's default count."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_LOCK = threading.RLock()
_default: int = torch.get_num_threads()


def set_default_threads(n: int) -> int:
    """Make `n` the process's CPU thread count and the one every temporary change returns to; returns it."""
    global _default
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}.")
    with _LOCK:
        _default = n
        torch.set_num_threads(n)
    return n


def default_threads() -> int:
    """The CPU thread count the process runs with outside temporary changes."""
    return _default


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` CPU threads (None: unchanged), then return to the process's default count; one such
    block at a time in the process."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}.")
    with _LOCK:
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(_default)
