"""Early-exit models: backbones, exit heads, the early-exit wrapper, exit placement and the registry."""
from .backbones import Backbone, CifarResNet, CompactCNN
from .early_exit import EarlyExitNet, ExitOutputs
from .heads import AEPHead, EENetHead
from .placement import PLACEMENTS, place_exits
from .registry import ModelSpec, build_model, list_models, register_model

__all__ = ["Backbone", "CifarResNet", "CompactCNN", "EarlyExitNet", "ExitOutputs", "AEPHead", "EENetHead",
           "PLACEMENTS", "place_exits", "ModelSpec", "build_model", "list_models", "register_model"]
