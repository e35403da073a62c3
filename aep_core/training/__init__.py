"""Training: one loop, several methods (baseline, AEP weighting schemes, EENet losses, survey modes)."""

from aep_core.training.loop import EpochStats, TrainConfig, TrainResult, evaluate_exits, train
from aep_core.training.methods import METHODS, Method, MethodSettings, build_method, get_method, register_method
from aep_core.training.weighting import SCHEMES, ExitWeighting, SchemeSpec, register_scheme, scheme_weights

__all__ = [
    "METHODS",
    "SCHEMES",
    "EpochStats",
    "ExitWeighting",
    "Method",
    "MethodSettings",
    "SchemeSpec",
    "TrainConfig",
    "TrainResult",
    "build_method",
    "evaluate_exits",
    "get_method",
    "register_method",
    "register_scheme",
    "scheme_weights",
    "train",
]
