"""An "I don't know" signal: does an input look like the data the model was trained on?

Two scores. The first uses what an early-exit network gives for free: its exits' disagreement (how
often the predicted class changes from one exit to the next) and the final exit's confidence. The
second, the one the app flags with, is the Mahalanobis distance of all exits' logits to the nearest
class mean, with class means and a shared covariance fitted on half of the validation outputs and the
flagging threshold set on the other half; an input whose own pixels are (nearly) uniform, or whose
upload is a thin strip, is flagged whatever its logits. Higher means less like the training data. Both
are measured as the AUROC of telling in-distribution test images from shifted ones made on the fly:
rotated, inverted, noise, uniform and near-uniform grey, gradients, pen strokes, and thin strips.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.models import EarlyExitNet
from aep_core.preprocess import prepare_image

DEFAULT_WEIGHT = 0.5  # share of the disagreement in the score; the rest is 1 - final confidence
DEFAULT_QUANTILE = 0.95  # the flagging threshold lets this share of in-distribution val images through
SCORE_EXPLANATION = (
    "0.5 x the share of consecutive exits that change class + 0.5 x (1 - the final exit's top probability). "
    "Higher: less like the training images."
)


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


# ---- synthetic shifted inputs: images with no garment at all --------------------------------------


def _like(base: np.ndarray, images: torch.Tensor) -> torch.Tensor:
    """(n, h, w) float grey images -> uint8 with the shape of `images` ((n, h, w) or (n, c, h, w))."""
    grey = np.clip(np.rint(base), 0, 255).astype(np.uint8)
    if images.ndim == 4:
        grey = np.broadcast_to(grey[:, None], tuple(images.shape))
    return torch.from_numpy(np.array(grey))  # a writable copy of the broadcast view


def uniform_grey(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Blank images, one grey level each, the levels spread evenly over 0..255."""
    n, h, w = len(images), images.shape[-2], images.shape[-1]
    levels = np.linspace(0, 255, n) if n > 1 else np.array([128.0])
    return _like(np.broadcast_to(levels[:, None, None], (n, h, w)), images)


def near_uniform(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random grey level per image plus Gaussian pixel noise of 1 to 6 grey levels (seeded)."""
    rng = np.random.default_rng(seed)
    n, h, w = len(images), images.shape[-2], images.shape[-1]
    level, noise = rng.uniform(0, 255, (n, 1, 1)), rng.uniform(1, 6, (n, 1, 1))
    return _like(level + noise * rng.standard_normal((n, h, w)), images)


def gradient(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Linear ramps between two random grey levels in a random direction (seeded)."""
    rng = np.random.default_rng(seed)
    n, h, w = len(images), images.shape[-2], images.shape[-1]
    yy, xx = np.mgrid[0:h, 0:w] / max(h - 1, w - 1, 1)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    t = np.cos(angle) * xx + np.sin(angle) * yy  # (n, h, w)
    lo, hi = t.min((1, 2), keepdims=True), t.max((1, 2), keepdims=True)
    t = (t - lo) / np.maximum(hi - lo, 1e-9)
    a, b = rng.uniform(0, 255, (2, n, 1, 1))
    return _like(a + (b - a) * t, images)


def strokes(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Handwriting-like images: one to three thick light pen strokes on black, slightly blurred (seeded)."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[-2], images.shape[-1]
    out = []
    for _ in range(len(images)):
        im = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(im)
        for _ in range(rng.integers(1, 4)):
            points = [tuple(p) for p in rng.uniform(0.15, 0.85, (int(rng.integers(2, 5)), 2)) * (w, h)]
            draw.line(points, fill=255, width=max(1, round(min(h, w) * rng.uniform(0.07, 0.12))))
        out.append(np.asarray(im.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float64))
    return _like(np.stack(out), images)


def gaussian_noise(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian pixel noise around mid-grey (std 60 grey levels, clipped to 0..255; seeded)."""
    rng = np.random.default_rng(seed)
    n, h, w = len(images), images.shape[-2], images.shape[-1]
    return _like(128 + 60 * rng.standard_normal((n, h, w)), images)


SYNTHETIC: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "uniform": uniform_grey,
    "near-uniform": near_uniform,
    "gradient": gradient,
    "strokes": strokes,
    "gaussian": gaussian_noise,
}


def synthetic_images(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """uint8 images with the shape of `images` and nothing of them in it: `kind` is one of SYNTHETIC."""
    if kind not in SYNTHETIC:
        raise ConfigError(f"Unknown synthetic input '{kind}'. Choose one of: {', '.join(SYNTHETIC)}.")
    return SYNTHETIC[kind](images, seed)


def thin_strips(
    n: int, image_size: int = 28, in_channels: int = 1, seed: int = 0
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Uploads 25 to 400 times longer than wide (blank, noisy or graded), prepared as the app prepares an
    upload: uint8 images (n, image_size, image_size) or (n, c, s, s), and each upload's (width, height)."""
    rng = np.random.default_rng(seed)
    images, sizes = [], []
    for i in range(n):
        long, short = int(rng.choice([1000, 2000, 4000])), int(rng.choice([10, 20, 40]))
        w, h = (long, short) if i % 2 == 0 else (short, long)
        level = rng.uniform(0, 255)
        a = np.full((h, w), level)
        if i % 3 == 1:
            a = a + rng.uniform(1, 20) * rng.standard_normal((h, w))
        elif i % 3 == 2:
            ramp = np.linspace(0, 100, max(h, w))  # along the long side
            a = a + rng.choice([-1, 1]) * (ramp[None, :] if w >= h else ramp[:, None])
        buf = io.BytesIO()
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").save(buf, "PNG")
        preview = prepare_image(buf.getvalue(), image_size, in_channels).preview
        images.append(preview if preview.ndim == 2 else np.moveaxis(preview, -1, 0))
        sizes.append((w, h))
    return torch.from_numpy(np.stack(images)), sizes


# ---- the input's own statistics --------------------------------------------------------------------

MIN_PIXEL_STD = 8.0  # grey levels; the least varied of Fashion-MNIST's 60,000 training images has 16.5
MAX_ASPECT = 10.0  # longest side over shortest side of an upload; training images are square


def input_reasons(image: np.ndarray, original_size: tuple[int, int] | None = None) -> list[str]:
    """Why an image cannot look like a training image, from its own pixels alone (empty if nothing stands
    out): the uint8 image the model sees is nearly uniform, or the upload (width, height) is a thin strip."""
    reasons = []
    if original_size is not None:
        w, h = original_size
        aspect = max(w, h) / max(min(w, h), 1)
        if aspect > MAX_ASPECT:
            reasons.append(f"the upload is {w}x{h} pixels, {aspect:.0f} times longer than wide")
    spread = float(np.asarray(image, dtype=np.float64).std())
    if spread < MIN_PIXEL_STD:
        reasons.append(
            f"the image is nearly blank: its pixels vary by {spread:.1f} grey levels (standard deviation), "
            f"under {MIN_PIXEL_STD:g}"
        )
    return reasons


# ---- a feature-space score: Mahalanobis distance of all exits' logits to the nearest class mean --------

FIT_SEED = 0  # the seeded split of the validation outputs into a fitting half and a thresholding half
MIN_FIT_SAMPLES = 20  # with fewer validation outputs the flag falls back to the disagreement + confidence score
SHRINKAGE = 1e-3  # share of the mean variance added to the covariance's diagonal, keeping it invertible


def exit_features(logits: np.ndarray) -> np.ndarray:
    """(n, exits * classes): every exit's logits side by side, one row per sample."""
    z = _check_logits(logits).astype(np.float64)
    return z.transpose(1, 0, 2).reshape(z.shape[1], -1)


@dataclass
class ClassGaussians:
    """Class means of the exits' logits and their shared covariance, both in whitened coordinates (where the
    Mahalanobis distance is the Euclidean one)."""

    whitener: np.ndarray  # (d, d): features @ whitener are whitened
    centres: np.ndarray  # (classes seen, d) whitened class means

    def distance(self, logits: np.ndarray) -> np.ndarray:
        """(n,) Mahalanobis distance of each sample's logits (exits, n, classes) to the nearest class mean."""
        f = exit_features(logits)
        if f.shape[1] != self.whitener.shape[0]:
            raise ConfigError(
                f"The OOD statistics were fitted on {self.whitener.shape[0]} logits per sample, got {f.shape[1]}."
            )
        z = f @ self.whitener  # (n, d)
        d2 = (z * z).sum(1)[:, None] - 2 * z @ self.centres.T + (self.centres * self.centres).sum(1)[None]
        return np.sqrt(np.maximum(d2.min(1), 0.0))


def fit_class_gaussians(logits: np.ndarray, labels: np.ndarray, shrinkage: float = SHRINKAGE) -> ClassGaussians:
    """Class means and a shared covariance of the exits' logits (exits, n, classes) of labelled images."""
    f, y = exit_features(logits), np.asarray(labels).ravel()
    if len(y) != len(f) or len(f) < 2:
        raise ConfigError(f"Fitting the OOD statistics needs labels for at least 2 samples, got {len(y)}.")
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])  # (classes seen, d)
    r = f - means[np.searchsorted(classes, y)]
    cov = r.T @ r / len(f)
    cov += (shrinkage * np.trace(cov) / len(cov) + 1e-12) * np.eye(len(cov))
    whitener = np.linalg.cholesky(np.linalg.inv(cov))  # precision = W W^T, so |x W|^2 = x P x^T
    return ClassGaussians(whitener, means @ whitener)


# ---- the flag the app shows ------------------------------------------------------------------------


@dataclass
class Verdict:
    """Whether one input is flagged as unlike the training data, its score, and why in words."""

    score: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class FlagThreshold:
    """The score above which an input is flagged as unlike the training data, where it comes from, and what
    the score is: the Mahalanobis distance of the exits' logits (with `gaussians`), else the exits'
    disagreement and confidence."""

    value: float
    description: str
    gaussians: ClassGaussians | None = None

    @property
    def score_name(self) -> str:
        """What the score measures, as a label."""
        return "Distance to the training classes" if self.gaussians is not None else '"I don\'t know" score'

    @property
    def explanation(self) -> str:
        """How the score is computed and what else flags an input, in a sentence or two."""
        if self.gaussians is None:
            return SCORE_EXPLANATION
        return (
            "Mahalanobis distance of all exits' logits to the nearest class mean, with the class means and their "
            "shared covariance fitted on validation images. Higher: less like the training images. An image that "
            "is nearly blank, or an upload far longer than wide, is flagged whatever its logits."
        )

    def format(self, value: float) -> str:
        """A score or threshold as shown: distances to 1 decimal, the disagreement + confidence score to 3."""
        return f"{value:.1f}" if self.gaussians is not None else f"{value:.3f}"

    def scores(
        self,
        logits: np.ndarray,
        images: np.ndarray | torch.Tensor | None = None,
        original_sizes: list[tuple[int, int]] | None = None,
    ) -> np.ndarray:
        """(n,) scores of samples' logits (exits, n, classes); inf where the sample's uint8 image (one per
        sample, any layout) or its upload size (width, height) alone rules out a training image."""
        s = ood_score(logits) if self.gaussians is None else self.gaussians.distance(logits)
        if images is not None:
            sizes = original_sizes or [None] * len(s)
            odd = [bool(input_reasons(np.asarray(im), size)) for im, size in zip(images, sizes, strict=True)]
            s = np.where(odd, np.inf, s)
        return s

    def judge(
        self, logits: np.ndarray, image: np.ndarray | None = None, original_size: tuple[int, int] | None = None
    ) -> Verdict:
        """The verdict on one input from its logits (exits, classes), the uint8 image the model sees and the
        upload's (width, height)."""
        score = float(self.scores(np.asarray(logits)[:, None, :])[0])
        reasons = [] if image is None else input_reasons(image, original_size)
        if score > self.value:
            if self.gaussians is not None:
                far = f"its exits' outputs lie far from those of every class (distance {self.format(score)}"
            else:
                far = f"its exits disagree or its final exit is unsure (score {self.format(score)}"
            reasons.append(f"{far}, threshold {self.format(self.value)})")
        return Verdict(score, bool(reasons), reasons)


def fit_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded split of n validation outputs into the indices the class statistics are fitted on and those
    the threshold is set on (half each)."""
    order = np.random.default_rng(FIT_SEED).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def flag_threshold(
    val: ExitRecord | None, fallback: ExitRecord | None, quantile: float = DEFAULT_QUANTILE
) -> FlagThreshold | None:
    """The flagging threshold, from the validation record, else from `fallback` (an evaluation record of
    another split); None without either. Class means and covariance are fitted on one half of the record, and
    the threshold is this quantile of the distances on the other half, so that about 1 - quantile of unseen
    in-distribution images are flagged. A record of fewer than MIN_FIT_SAMPLES samples gets the exits'
    disagreement and confidence score instead."""
    rec, split = (val, "validation") if val is not None else (fallback, "evaluation")
    if rec is None:
        return None
    if rec.num_samples < MIN_FIT_SAMPLES:
        return FlagThreshold(
            ood_threshold(ood_score(rec.logits), quantile),
            f"{100 * quantile:g}% of {rec.num_samples:,} {split} images score below it",
        )
    fit, held = fit_split(rec.num_samples)
    gaussians = fit_class_gaussians(rec.logits[:, fit], rec.labels[fit])
    value = ood_threshold(gaussians.distance(rec.logits[:, held]), quantile)
    return FlagThreshold(
        value,
        f"class means and covariance fitted on {len(fit):,} {split} images; {100 * quantile:g}% of "
        f"{len(held):,} other {split} images lie closer",
        gaussians,
    )
