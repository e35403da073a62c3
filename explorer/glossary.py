"""The app's jargon in plain words: each term with a one-sentence explanation and the step of the Learn page
that teaches it, for tooltips (`help=`) and captions on every page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """A word of the app's jargon: what it means in one plain sentence, and the Learn step that teaches it."""

    name: str
    meaning: str
    step: int


_TERMS = [
    Term(
        "exit",
        "A small classifier (a head) attached part-way through the network: an input it is sure about gets its "
        "answer there and skips the rest.",
        1,
    ),
    Term(
        "head",
        "The few layers of an exit that turn the network's features into a class prediction; each one costs a "
        "little compute of its own.",
        1,
    ),
    Term(
        "MACs",
        "Multiply-accumulates (a × b + c), the basic operation of convolutions and matrix products: counting them "
        "measures compute the same way on every machine.",
        1,
    ),
    Term(
        "latency",
        "Measured time for one input on a real machine; it follows MACs only roughly, since memory traffic and "
        "per-layer overheads cost time too.",
        1,
    ),
    Term(
        "network without exits",
        "The same backbone and final classifier with no early exits: the reference every MACs share is measured "
        "against (100%).",
        1,
    ),
    Term(
        "exit rule",
        "The test that decides, at each exit, whether an input stops there or travels on (for example: the top "
        "class probability reaches a threshold).",
        2,
    ),
    Term(
        "threshold",
        "The exit rule's bar: a higher threshold sends more inputs deeper, costing more compute for (usually) "
        "more accuracy.",
        2,
    ),
    Term(
        "top probability",
        "The softmax probability of the class an exit predicts: its confidence in its own answer.",
        2,
    ),
    Term(
        "overthinking",
        "An early exit answers an input right, but the final exit, after more computation, gets it wrong.",
        3,
    ),
    Term(
        "expected MACs",
        "The average MACs per input under an exit rule: inputs that stop early pay less, inputs that travel to the "
        "end pay the most.",
        4,
    ),
    Term(
        "Pareto front",
        "The settings no other setting beats on both accuracy and compute: the best trade-offs on offer.",
        4,
    ),
    Term(
        "oracle",
        "A rule that peeks at the true label and stops each input at the first exit that is right: an upper "
        "bound no real rule can beat.",
        4,
    ),
    Term(
        "calibration",
        'Whether an exit that says "90% sure" is right 90% of the time.',
        5,
    ),
    Term(
        "temperature scaling",
        "Dividing an exit's logits by one number T, fitted on the validation split, to make its confidence match "
        "its accuracy; no prediction changes.",
        5,
    ),
    Term(
        "ECE",
        "Expected calibration error: the average gap between confidence and accuracy over confidence bins "
        "(0 = calibrated).",
        5,
    ),
    Term(
        "reliability diagram",
        "Accuracy against confidence per confidence bin; on the diagonal an exit means what it says.",
        5,
    ),
    Term(
        "AEP",
        "Anticipate, Ensemble and Prune: exits trained jointly, averaged at test time, and the layers after the "
        "last useful exit removed.",
        6,
    ),
    Term(
        "ensemble",
        "The weighted average of the softmax outputs of exits 0..k, used as one prediction.",
        6,
    ),
    Term(
        "pruning",
        "Cutting off the blocks and exits after a chosen exit, for good: a smaller network for every input.",
        7,
    ),
    Term(
        "tolerance",
        "How many accuracy points below the best ensemble a pruning cut may lose in exchange for a smaller network.",
        7,
    ),
    Term(
        "EENet",
        "An early-exit network whose exits each learn a confidence score of their own, trained with a cost term so "
        "the network learns when to stop.",
        8,
    ),
    Term(
        "cost term",
        "The part of the EENet loss that charges for compute: a larger weight λ pushes inputs to stop earlier.",
        8,
    ),
    Term(
        "tier",
        "One machine of a deployment (device, edge box, cloud) running its part of the network.",
        9,
    ),
    Term(
        "split point",
        "The last exit a tier runs; inputs not answered by then send their features over the link to the next tier.",
        9,
    ),
    Term(
        "static network",
        "An ordinary network without exits: every input pays the same compute.",
        10,
    ),
    Term(
        "cascade",
        "Two separate networks: a small one answers the inputs it is sure about and passes the rest to a big one.",
        10,
    ),
    Term(
        "validation split",
        "Held-out images used to choose settings (thresholds, temperatures, cuts); the test split only reports.",
        10,
    ),
]
GLOSSARY: dict[str, Term] = {t.name: t for t in _TERMS}


def term(name: str) -> Term:
    """The glossary entry of `name` (KeyError naming the known terms otherwise)."""
    if name not in GLOSSARY:
        raise KeyError(f"'{name}' is not in the glossary; known terms: {', '.join(GLOSSARY)}.")
    return GLOSSARY[name]


def explain(name: str) -> str:
    """One line for a caption: the term in bold, its meaning, and the Learn step that teaches it."""
    t = term(name)
    return f"**{t.name}**: {t.meaning} (Learn, step {t.step})"


def help_text(*names: str, lead: str | None = None) -> str:
    """A tooltip explaining the terms, one paragraph each, after an optional first sentence of its own."""
    parts = [lead] if lead else []
    return "\n\n".join(parts + [explain(n) for n in names])


def terms_of_step(step: int) -> list[Term]:
    """The terms a Learn step teaches, in glossary order."""
    return [t for t in _TERMS if t.step == step]
