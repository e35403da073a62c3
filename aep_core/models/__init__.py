"""Early-exit models: backbones, exit heads, the early-exit wrapper, exit placement and the registry."""
from aep_core.models.backbones import Backbone, CifarResNet, CompactCNN
from aep_core.models.early_exit import EarlyExitNet, ExitOutputs
from aep_core.models.heads import AEPHead, EENetHead
from aep_core.models.placement import PLACEMENTS, place_exits
from aep_core.models.registry import ModelSpec, build_model, list_models, register_model

__all__ = ["Backbone", "CifarResNet", "CompactCNN", "EarlyExitNet", "ExitOutputs", "AEPHead", "EENetHead",
           "PLACEMENTS", "place_exits", "ModelSpec", "build_model", "list_models", "register_model"]
