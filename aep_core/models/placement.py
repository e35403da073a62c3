"""Where the exits go: after every stage, after every block, or at cost fractions as in EENets.

Cost-fraction rules give target MACs T_i for early exits i = 0..N-1 (F = MACs of the network without
exits, phi the golden ratio (1 + sqrt 5) / 2):
  fine:       T_i = F * (1 - 0.95^(i+1))
  pareto:     T_i = F * (1 - 0.8^(i+1))
  linear:     T_i = F * (i+1) / (N+1)
  gold_ratio: T_i = F * phi^(i-N)
As in the EENets authors' code, the blocks are walked in order and exit i goes after the first block, not
already holding an exit, whose cumulative MACs reach T_i: two exits never share a block, an exit whose
target block is taken moves on to the next one, and a count that cannot be placed before the final
block is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from aep_core.errors import ConfigError

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2

COST_FRACTIONS: dict[str, Callable[[int, int], float]] = {
    "fine": lambda i, n: 1 - 0.95 ** (i + 1),
    "pareto": lambda i, n: 1 - 0.8 ** (i + 1),
    "linear": lambda i, n: (i + 1) / (n + 1),
    "gold_ratio": lambda i, n: GOLDEN_RATIO ** (i - n),
}
PLACEMENTS = ("stages", "blocks", *COST_FRACTIONS)


def place_exits(
    placement: str | Sequence[int],
    block_stage: Sequence[int],
    cumulative_macs: Sequence[int] | None = None,
    num_exits: int | None = None,
) -> list[int]:
    """Indices of the blocks followed by an exit; the last block (the final classifier) is always included.

    `placement` is a rule name from PLACEMENTS or an explicit list of block indices. Cost-fraction rules
    need `cumulative_macs` (MACs of the backbone up to and including each block, final classifier
    excluded except in the last entry's total F) and `num_exits` early exits.
    """
    last = len(block_stage) - 1
    if not isinstance(placement, str):
        chosen = sorted({int(b) for b in placement})
        if any(b < 0 or b > last for b in chosen):
            raise ConfigError(f"Exit positions must be block indices 0..{last}, got {list(placement)}.")
    elif placement == "stages":
        chosen = [b for b in range(last) if block_stage[b] != block_stage[b + 1]]
    elif placement == "blocks":
        chosen = list(range(last))
    elif placement in COST_FRACTIONS:
        if cumulative_macs is None or not num_exits or num_exits < 1:
            raise ConfigError(f"Placement '{placement}' needs the number of early exits (>= 1).")
        chosen = _cost_fraction_blocks(placement, cumulative_macs, num_exits, last)
    else:
        raise ConfigError(
            f"Unknown exit placement '{placement}'. Choose one of: {', '.join(PLACEMENTS)}, or block indices."
        )
    return sorted(set(chosen) | {last})


def _cost_fraction_blocks(placement: str, cumulative_macs: Sequence[int], num_exits: int, last: int) -> list[int]:
    """The blocks followed by the `num_exits` early exits of cost-fraction rule `placement`, one exit per block,
    all before the final block `last`; ConfigError when they do not fit."""
    total = cumulative_macs[-1]
    chosen: list[int] = []
    for b in range(last):  # the final block carries the final classifier, never an early exit
        i = len(chosen)
        if i < num_exits and cumulative_macs[b] >= total * COST_FRACTIONS[placement](i, num_exits):
            chosen.append(b)
    if len(chosen) < num_exits:
        raise ConfigError(
            f"Placement '{placement}' cannot fit {num_exits} early exits in this backbone: only {len(chosen)} of "
            f"its {last} blocks before the final one reach their MACs targets. Ask for at most {len(chosen)} "
            "early exits, use a deeper backbone, or give block indices."
        )
    return chosen
