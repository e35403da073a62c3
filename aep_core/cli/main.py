"""Command line: `python -m aep_core <command>` (or `aep <command>`). The parser is assembled from one module
per command group, each registering its sub-commands and their handlers with `add_commands(sub)`.

User errors (missing data, bad checkpoints, impossible settings or option values, outputs that cannot be
written) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from aep_core.allocator import keep_freed_buffers
from aep_core.cli import calibration, cascade, data, deploy, exit_outputs, exits, models, pruning, run, train
from aep_core.cli.common import Parser, UsageError
from aep_core.errors import AepError
from aep_core.outputs import WRITE_ERRNOS, reason

COMMAND_GROUPS = (train, models, data, exits, pruning, cascade, deploy, calibration, run, exit_outputs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m aep_core`; each sub-command's handler is its `func` default."""
    p = Parser(prog="aep", description="Early-exit networks: train, evaluate, inspect.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the sub-command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    keep_freed_buffers()
    try:
        return args.func(args)
    except AepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a file that cannot be written or read where the command was pointed (not a bug)
        if e.errno not in WRITE_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{reason(e)}.", file=sys.stderr)
        return 2


def entry() -> None:
    """The `aep` console command."""
    sys.exit(main())
