"""Training: one loop, several methods (baseline, AEP weighting schemes, EENet losses, survey modes)."""
from .loop import EpochStats, TrainConfig, TrainResult, evaluate_exits, train
from .methods import METHODS, Method, MethodSettings, head_for
from .weighting import SCHEMES, ExitWeighting

__all__ = ["EpochStats", "TrainConfig", "TrainResult", "evaluate_exits", "train", "METHODS", "Method",
           "MethodSettings", "head_for", "SCHEMES", "ExitWeighting"]
