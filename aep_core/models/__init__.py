"""Early-exit models: backbones, exit heads, the early-exit wrapper, exit placement and the registry."""

from aep_core.models.backbones import Backbone, CifarResNet, CompactCNN
from aep_core.models.early_exit import EarlyExitNet, ExitOutputs
from aep_core.models.heads import HEAD_TYPES, AEPHead, EENetHead, ExitHead
from aep_core.models.placement import PLACEMENTS, place_exits
from aep_core.models.registry import BackboneSpec, ModelSpec, build_model, get_backbone, list_models, register_model

__all__ = [
    "HEAD_TYPES",
    "PLACEMENTS",
    "AEPHead",
    "Backbone",
    "BackboneSpec",
    "CifarResNet",
    "CompactCNN",
    "EENetHead",
    "EarlyExitNet",
    "ExitHead",
    "ExitOutputs",
    "ModelSpec",
    "build_model",
    "get_backbone",
    "list_models",
    "place_exits",
    "register_model",
]
