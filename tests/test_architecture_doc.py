"""docs/ARCHITECTURE.md's registry examples run as written, and each new entry is picked up with no other edit."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from aep_core.cli.main import build_parser
from aep_core.evaluation import load_evaluation
from aep_core.exits.rules import RULES, list_rules, replay_rule
from aep_core.models.backbones import Backbone
from aep_core.models.registry import BACKBONES, list_models, register_model
from aep_core.paths import PROJECT_DIR, shipped_models_dir
from aep_core.training.methods import METHODS
from aep_core.training.weighting import SCHEMES, scheme_weights

DOC = PROJECT_DIR / "docs" / "ARCHITECTURE.md"


@pytest.fixture
def doc_examples():
    """Run every Python block of the document; remove what they registered afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace = {"torch": torch, "F": F, "register_model": register_model, "Backbone": Backbone}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    yield
    RULES.pop("margin", None)
    SCHEMES.pop("last_heavy", None)
    METHODS.pop("final-and-first", None)
    BACKBONES.pop("mlp", None)


def test_the_documented_entries_reach_every_consumer(doc_examples):
    assert "margin" in list_rules(deployable=True, thresholds=True)
    rec = load_evaluation(shipped_models_dir() / "aep_hybrid.val.npz")
    assert 0 < replay_rule(rec, "margin", thresholds=0.8).accuracy <= 1
    args = build_parser().parse_args(["train", "--method", "final-and-first", "--weighting", "last_heavy"])
    assert (args.method, args.weighting) == ("final-and-first", "last_heavy")
    assert build_parser().parse_args(["policy", "x.npz", "--rule", "margin"]).rule == "margin"
    w = scheme_weights("last_heavy", 4)
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and w[-1] == 0.5
    assert "mlp" in list_models()
