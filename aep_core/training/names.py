"""Model names in a shared output folder: a run claims `<name>` before it trains, so that no two runs write
the same checkpoint and no existing model is replaced without the caller asking for it.

A claim is a placeholder file `<name>.training` created with O_CREAT | O_EXCL (atomic across processes), and
held in a process-wide set under a lock (so threads of one server never race). It records the process and
host that hold it; a claim left by a process that no longer runs on this host is stale and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aep_core.errors import ConfigError

CLAIM_SUFFIX = ".training"
MAX_NAME_LENGTH = 40
FOREIGN_CLAIM_MAX_AGE_S = 24 * 3600.0  # a claim from another host cannot be checked: trust it this long
NameState = Literal["free", "exists", "training", "reserved"]

_lock = threading.Lock()
_held: set[Path] = set()  # claim files this process holds


class NameTaken(ConfigError):
    """A model name that cannot be used as asked: it exists, is being trained, or belongs to another model.
    `suggestion` is a free name close to it."""

    def __init__(self, name: str, state: NameState, suggestion: str) -> None:
        self.name, self.state, self.suggestion = name, state, suggestion
        reason = {
            "exists": f"A model named '{name}' already exists (possibly someone else's); confirm replacing it",
            "training": f"A model named '{name}' is being trained right now and cannot be replaced",
            "reserved": f"'{name}' is the name of another model that cannot be replaced from here",
        }[state]
        super().__init__(f"{reason}, or choose another name: '{suggestion}' is free.")


def clean_model_name(raw: str) -> str:
    """The name with everything but letters, digits, - and _ removed, at most 40 characters. ConfigError if
    nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_-]", "", raw)[:MAX_NAME_LENGTH]
    if not name:
        raise ConfigError("Give the model a name made of letters, digits, - or _.")
    return name


def claim_path(folder: str | Path, name: str) -> Path:
    """The placeholder file that marks `name` as being trained in `folder` (absolute, so that one claim has one
    path however the folder is spelt)."""
    return Path(folder).resolve() / f"{name}{CLAIM_SUFFIX}"


def name_state(folder: str | Path, name: str, reserved: frozenset[str] | set[str] = frozenset()) -> NameState:
    """Whether `name` is free in `folder`, taken by a finished model (`<name>.pt`), by a run in progress (a live
    claim), or one of the `reserved` names (models elsewhere that share the name space)."""
    if name in reserved:
        return "reserved"
    path = claim_path(folder, name)
    if path.exists() and _is_live(path):
        return "training"
    return "exists" if (Path(folder) / f"{name}.pt").exists() else "free"


def free_name(folder: str | Path, name: str, reserved: frozenset[str] | set[str] = frozenset()) -> str:
    """The first of `name-2`, `name-3`, ... (counting on from an existing `-N` suffix) that is free in `folder`."""
    match = re.fullmatch(r"(.*?)-(\d+)", name)
    base, n = (match.group(1), int(match.group(2)) + 1) if match and match.group(1) else (name, 2)
    while True:
        suffix = f"-{n}"
        candidate = base[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if name_state(folder, candidate, reserved) == "free":
            return candidate
        n += 1


@dataclass
class NameClaim:
    """The right to write `<folder>/<name>.pt` (and its side files) until released."""

    folder: Path
    name: str
    replaces: bool = False  # a finished model of this name exists and will be replaced
    released: bool = field(default=False, init=False)

    @property
    def checkpoint(self) -> Path:
        """The checkpoint path the claimed name stands for."""
        return self.folder / f"{self.name}.pt"

    def release(self) -> None:
        """Give the name back (idempotent)."""
        if self.released:
            return
        path = claim_path(self.folder, self.name)
        with _lock:
            _held.discard(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.released = True

    def __enter__(self) -> NameClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_name(
    folder: str | Path, name: str, *, replace: bool = False, reserved: frozenset[str] | set[str] = frozenset()
) -> NameClaim:
    """Claim `name` in `folder` for one training run. Raises NameTaken (with a free name to offer) when the name
    is being trained by anyone, is `reserved`, or names a finished model and `replace` is False. Only one of
    several simultaneous callers, in this process or another, gets a claim."""
    folder = Path(folder).resolve()
    path = claim_path(folder, name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"Cannot create the model folder {folder}: {e.strerror}.") from None
    with _lock:
        if name in reserved:
            raise NameTaken(name, "reserved", free_name(folder, name, reserved))
        if path.exists() and not _is_live(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a process that is gone
        exists = (folder / f"{name}.pt").exists()
        if exists and not replace and not path.exists():
            raise NameTaken(name, "exists", free_name(folder, name, reserved))
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise NameTaken(name, "training", free_name(folder, name, reserved)) from None
        except OSError as e:
            raise ConfigError(f"Cannot write to the model folder {folder}: {e.strerror}.") from None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
        _held.add(path)
    return NameClaim(folder, name, replaces=exists)


def _is_live(path: Path) -> bool:
    """Whether a claim file belongs to a run that may still be going (called with or without `_lock`)."""
    try:
        info = json.loads(path.read_text() or "{}")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # being written right now, or unreadable: assume someone holds it
    if not info:
        return age < 60.0  # created an instant ago and not yet filled in, or left empty by a crash
    if info.get("host") != socket.gethostname():
        return age < FOREIGN_CLAIM_MAX_AGE_S
    pid = info.get("pid")
    if pid == os.getpid():
        return path in _held
    return isinstance(pid, int) and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to someone else
    return True
