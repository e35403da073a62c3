"""Saliency maps per exit with Captum: each exit is wrapped as a module returning that exit's logits,
so any attribution method explains what exit k looks at.

Captum registers hooks on the model it explains, and models are shared (cached) between app sessions:
each call explains a private copy of the model, so no hook ever touches the shared one, and calls are
serialised by one process-wide lock to keep CPU use bounded.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aep_core.models import EarlyExitNet

METHODS = {
    "saliency": "Saliency (input gradient)",
    "integrated_gradients": "Integrated Gradients",
    "grad_cam": "Grad-CAM (stage feeding the exit)",
    "occlusion": "Occlusion",
}
_LOCK = threading.Lock()


class ExitModule(nn.Module):
    """Exit k of an early-exit network as a plain classifier: x (b, c, h, w) -> logits (b, classes)."""

    def __init__(self, model: EarlyExitNet, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, upto=self.k).logits[self.k]


@dataclass
class ExitSaliency:
    """One exit's explanation: a map in [0, 1] over the input pixels, and the class it explains."""

    exit: int
    heatmap: np.ndarray  # (h, w) float32 in [0, 1]
    target: int
    predicted: int
    probability: float  # probability of the predicted class at this exit


def _normalise(a: torch.Tensor) -> np.ndarray:
    """(1, c, h, w) or (1, 1, h, w) attribution -> (h, w) magnitude scaled to [0, 1]."""
    m = a.detach().abs().sum(dim=1)[0].float().numpy()
    top = float(m.max())
    return (m / top if top > 0 else m).astype(np.float32)


def _attribute(model: EarlyExitNet, k: int, x: torch.Tensor, target: int, method: str) -> torch.Tensor:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    f = ExitModule(model, k)
    if method == "saliency":
        return Saliency(f).attribute(x, target=target)
    if method == "integrated_gradients":
        return IntegratedGradients(f).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=32)
    if method == "grad_cam":
        layer = model.backbone.blocks[model.exit_blocks[k]]
        cam = LayerGradCam(f, layer).attribute(x, target=target, relu_attributions=True)  # (1, 1, h', w')
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    if method == "occlusion":
        c, h, _ = x.shape[1:]
        win = max(2, h // 7)
        return Occlusion(f).attribute(
            x,
            sliding_window_shapes=(c, win, win),
            strides=(c, max(1, win // 2), max(1, win // 2)),
            baselines=0.0,
            target=target,
        )
    raise ValueError(f"Unknown saliency method '{method}'. Choose one of: {', '.join(METHODS)}.")


def exit_saliency(
    model: EarlyExitNet, x: torch.Tensor, method: str = "saliency", target: int | None = None
) -> list[ExitSaliency]:
    """Saliency map of every exit for one image x (1, c, h, w): for `target` if given, else for the
    class each exit predicts."""
    if method not in METHODS:
        raise ValueError(f"Unknown saliency method '{method}'. Choose one of: {', '.join(METHODS)}.")
    x = x.detach().float()
    with _LOCK:
        private = copy.deepcopy(model).eval()
        with torch.no_grad():
            probs = [torch.softmax(z, 1)[0] for z in private(x).logits]  # per exit (classes,)
        out = []
        for k, p in enumerate(probs):
            pred = int(p.argmax())
            t = pred if target is None else int(target)
            attr = _attribute(private, k, x.clone().requires_grad_(True), t, method)
            out.append(ExitSaliency(k, _normalise(attr), t, pred, float(p[pred])))
    return out


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a [0, 1] heatmap (h, w) in red-yellow over a uint8 grayscale or RGB image -> (h, w, 3) uint8."""
    base = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    base = base.astype(np.float32) / 255 * 0.6
    heat = np.stack([np.clip(heatmap * 2, 0, 1), np.clip(heatmap * 2 - 1, 0, 1), np.zeros_like(heatmap)], axis=2)
    mix = (1 - alpha * heatmap[..., None]) * base + alpha * heatmap[..., None] * heat
    return (np.clip(mix, 0, 1) * 255).astype(np.uint8)
