"""An "I don't know" signal: does an input look like the data the model was trained on?

The score uses what an early-exit network gives for free: its exits' disagreement (how often the
predicted class changes from one exit to the next) and the final exit's confidence. Higher means
less like the training data. It is measured as the AUROC of telling in-distribution test images
from shifted ones made on the fly: rotated by 90 degrees, inverted, or uniform noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.models import EarlyExitNet

DEFAULT_WEIGHT = 0.5  # share of the disagreement in the score; the rest is 1 - final confidence
DEFAULT_QUANTILE = 0.95  # the flagging threshold lets this share of in-distribution val images through


def _check_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ConfigError(
            f"The OOD score needs per-exit logits (exits, n, classes) with n > 0, got shape {logits.shape}."
        )
    return logits


def disagreement(logits: np.ndarray) -> np.ndarray:
    """(n,) fraction of consecutive exit pairs whose predicted class changes (0 with a single exit)."""
    pred = _check_logits(logits).argmax(-1)  # (e, n)
    if pred.shape[0] < 2:
        return np.zeros(pred.shape[1])
    return (pred[1:] != pred[:-1]).mean(0)


def final_confidence(logits: np.ndarray) -> np.ndarray:
    """(n,) top softmax probability of the last exit."""
    z = _check_logits(logits)[-1].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return 1.0 / np.exp(z).sum(-1)


def ood_score(logits: np.ndarray, weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """(n,) "I don't know" score in [0, 1]: weight * disagreement + (1 - weight) * (1 - final confidence)."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"The disagreement weight must lie in [0, 1], got {weight}.")
    return weight * disagreement(logits) + (1 - weight) * (1 - final_confidence(logits))


def ood_threshold(in_scores: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The score above which an input is flagged: this quantile of in-distribution (validation) scores."""
    s = np.asarray(in_scores, dtype=np.float64)
    if s.size == 0:
        raise ConfigError("No in-distribution scores to set the OOD threshold from.")
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"The OOD quantile must lie in (0, 1), got {quantile}.")
    return float(np.quantile(s, quantile))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling out-of-distribution (higher score) from in-distribution:
    the probability that a random shifted input scores above a random in-distribution one (ties count
    half). Rank-based (Mann-Whitney U)."""
    a, b = np.asarray(in_scores, dtype=np.float64).ravel(), np.asarray(out_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ConfigError("AUROC needs at least one in-distribution and one shifted score.")
    _, inv, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based position of each distinct value in sorted order
    ranks = (first + (counts + 1) / 2.0)[inv]  # 1-based ranks, ties sharing their mean rank
    u = ranks[a.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


# ---- shifted inputs (uint8 images (n, h, w) or (n, c, h, w), as stored by the datasets) -------------


def rotated(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The images rotated by 90 degrees (counter-clockwise)."""
    return torch.rot90(images, 1, dims=(-2, -1)).contiguous()


def inverted(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The images with their intensities inverted (255 - x)."""
    return 255 - images


def uniform_noise(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform random pixels in 0..255 with the images' shape (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, images.shape, generator=g, dtype=torch.int64).to(images.dtype)


SHIFTS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "rotated": rotated,
    "inverted": inverted,
    "noise": uniform_noise,
}


def shift_images(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """Shifted copies of uint8 images: `kind` is one of SHIFTS (rotated, inverted, noise)."""
    if kind not in SHIFTS:
        raise ConfigError(f"Unknown shift '{kind}'. Choose one of: {', '.join(SHIFTS)}.")
    if images.dtype != torch.uint8:
        raise ConfigError(f"Shifted inputs are made from uint8 images, got {images.dtype}.")
    return SHIFTS[kind](images, seed)


@torch.no_grad()
def exit_logits(
    model: EarlyExitNet, images: torch.Tensor, mean: list[float], std: list[float], batch_size: int = 500
) -> np.ndarray:
    """Every exit's logits (exits, n, classes) for uint8 images, normalised with the dataset's mean and std."""
    model.eval()
    x = images if images.ndim == 4 else images[:, None]  # (n, c, h, w)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for i in range(0, len(x), batch_size):
        xb = (x[i : i + batch_size].float() / 255 - m) / s
        out.append(torch.stack(model(xb).logits).numpy())
    return np.concatenate(out, 1)


@dataclass
class ShiftResult:
    """How well the score tells one kind of shifted input from in-distribution images."""

    kind: str
    auroc: float  # combined score
    auroc_disagreement: float  # disagreement alone
    auroc_confidence: float  # 1 - final confidence alone
    flagged: float  # share of shifted inputs above the threshold


def ood_report(
    in_logits: np.ndarray, shifted_logits: dict[str, np.ndarray], threshold: float, weight: float = DEFAULT_WEIGHT
) -> list[ShiftResult]:
    """AUROC of the score (and of each of its parts) for each kind of shifted input, and the share flagged."""
    s_in, d_in, c_in = ood_score(in_logits, weight), disagreement(in_logits), 1 - final_confidence(in_logits)
    out = []
    for kind, lg in shifted_logits.items():
        s = ood_score(lg, weight)
        out.append(
            ShiftResult(
                kind,
                auroc(s_in, s),
                auroc(d_in, disagreement(lg)),
                auroc(c_in, 1 - final_confidence(lg)),
                float((s > threshold).mean()),
            )
        )
    return out


@dataclass
class FlagThreshold:
    """The score above which an input is flagged as unlike the training data, and where it comes from."""

    value: float
    description: str


def flag_threshold(
    val: ExitRecord | None, fallback: ExitRecord | None, quantile: float = DEFAULT_QUANTILE
) -> FlagThreshold | None:
    """The flagging threshold: this quantile of the score on the validation record, else on `fallback` (an
    evaluation record of another split); None without either."""
    rec, split = (val, "validation") if val is not None else (fallback, "evaluation")
    if rec is None:
        return None
    return FlagThreshold(
        ood_threshold(ood_score(rec.logits), quantile),
        f"{100 * quantile:g}% of {rec.num_samples:,} {split} images score below it",
    )
