"""Command-line sub-commands for exit policies, threshold search and pruning."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Register the sub-commands on `sub`; return name -> handler."""
    return {}
