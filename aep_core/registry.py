"""The one shape every registry of the project has (exit rules, weighting schemes, training methods,
backbones): entries by name in registration order, filled by a decorator, looked up with a clear error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from aep_core.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(dict[str, T]):
    """Entries of one concept by name. A plain dict for reading (`list(r)`, `r.items()`, `name in r`), plus
    `lookup` that names the choices when a name is unknown and decorators that register an entry."""

    def __init__(self, concept: str) -> None:
        super().__init__()
        self.concept = concept  # e.g. "exit rule": used in error messages

    def lookup(self, name: str) -> T:
        """The entry called `name`; ConfigError naming the registered choices otherwise."""
        if name not in self:
            raise ConfigError(f"Unknown {self.concept} '{name}'. Choose one of: {', '.join(self)}.")
        return self[name]

    def register_spec(self, spec: Any) -> Callable[[F], F]:
        """Decorator registering `spec` (a frozen dataclass with `name` and `build` fields) with the decorated
        function as its builder."""

        def wrap(build: F) -> F:
            self[spec.name] = replace(spec, build=build)
            return build

        return wrap

    def register_named(self, entry: T) -> T:
        """Register an entry that carries its own `name` (e.g. a class); returns it, so it works as a decorator."""
        self[entry.name] = entry  # type: ignore[attr-defined]
        return entry
