"""Training: one loop, several methods (baseline, AEP weighting schemes, EENet losses, survey modes)."""
from aep_core.training.loop import EpochStats, TrainConfig, TrainResult, evaluate_exits, train
from aep_core.training.methods import METHODS, Method, MethodSettings, head_for
from aep_core.training.weighting import SCHEMES, ExitWeighting

__all__ = ["EpochStats", "TrainConfig", "TrainResult", "evaluate_exits", "train", "METHODS", "Method",
           "MethodSettings", "head_for", "SCHEMES", "ExitWeighting"]
