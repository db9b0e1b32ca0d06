"""Features for drift monitoring of an image classifier, each one a person can read.

``compute_features(images, probabilities)`` turns a batch of flat images (float32
``[N, H*W]``, values in [0, 1], row-major, as the served signature's ``pixels`` input) and
the model's class probabilities (``[N, C]``, its ``probabilities`` output) into one
column per feature, ``{name: float64 array [N]}``, in the order of :func:`feature_names`:

* ``p_0`` .. ``p_{C-1}``: the model's class probabilities. Black-box shift detection on
  the softmax outputs was the strongest single detector on MNIST in Rabanser, Günnemann
  and Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting Dataset
  Shift" (NeurIPS 2019).
* ``confidence``: the largest probability; ``entropy``: the prediction's entropy divided
  by ``log C`` (0 = certain, 1 = uniform). Both drop when inputs look unfamiliar.
* ``predicted_class``: the argmax (the only ``Integral`` feature; tested with chi-square
  on its class counts, not with KS).
* image summaries: ``mean_intensity`` and ``std_intensity`` (brightness and contrast),
  ``ink_mass`` (fraction of pixels > 0.5), ``centroid_row`` / ``centroid_col`` (the
  intensity-weighted centre, 0 = top/left edge, 1 = bottom/right edge; 0.5 for a blank
  image), ``bbox_height`` / ``bbox_width`` (the box around pixels > 0.2 as a fraction of
  the image; 0 for a blank image).

Everything is vectorised numpy (no per-image Python loop); numpy only, so it ships to
SageMaker with the rest of ``model/``.
"""
from __future__ import annotations

import math

import numpy as np

INK_LEVEL = 0.5          # a pixel counts as ink above this value (ink_mass)
BBOX_LEVEL = 0.2         # pixels above this value define the bounding box
PREDICTED_CLASS = "predicted_class"
IMAGE_FEATURES = ("mean_intensity", "std_intensity", "ink_mass", "centroid_row",
                  "centroid_col", "bbox_height", "bbox_width")
MODEL_FEATURES = ("confidence", "entropy")
INTEGRAL = "Integral"
FRACTIONAL = "Fractional"


def probability_names(num_classes: int) -> list[str]:
    return [f"p_{c}" for c in range(num_classes)]


def feature_names(num_classes: int) -> list[str]:
    """All feature names, in the order :func:`compute_features` returns them."""
    return [*probability_names(num_classes), *MODEL_FEATURES, PREDICTED_CLASS,
            *IMAGE_FEATURES]


def inferred_type(name: str) -> str:
    """Model Monitor's ``inferred_type`` of a feature: ``Integral`` or ``Fractional``."""
    return INTEGRAL if name == PREDICTED_CLASS else FRACTIONAL


def image_shape_of(num_pixels: int, image_shape: tuple[int, int] | None = None
                   ) -> tuple[int, int]:
    """``(H, W)`` of a flat image: ``image_shape`` if given (checked), else square."""
    if image_shape is not None:
        h, w = (int(v) for v in image_shape)
        if h * w != num_pixels:
            raise ValueError(f"image shape {h}x{w} holds {h * w} pixels, the images have "
                             f"{num_pixels}")
        return h, w
    side = math.isqrt(num_pixels)
    if side * side != num_pixels:
        raise ValueError(f"{num_pixels} pixels is not a square image; pass image_shape=(H, W)")
    return side, side


def _extent(mask: np.ndarray) -> np.ndarray:
    """Per row of the boolean ``[N, L]`` mask: (last - first + 1) / L of the True
    positions, 0 where none is True."""
    n, length = mask.shape
    first = mask.argmax(axis=1)
    last = length - 1 - mask[:, ::-1].argmax(axis=1)
    size = (last - first + 1).astype(np.float64) / length
    return np.where(mask.any(axis=1), size, 0.0)


def image_features(images: np.ndarray, image_shape: tuple[int, int] | None = None
                   ) -> dict[str, np.ndarray]:
    """The image summaries of :data:`IMAGE_FEATURES` for ``[N, H*W]`` images in [0, 1]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"images must be [N, H*W], got shape {list(x.shape)}")
    h, w = image_shape_of(x.shape[1], image_shape)
    grid = x.reshape(-1, h, w)
    mass = x.sum(axis=1, dtype=np.float64)
    rows = grid.sum(axis=2, dtype=np.float64)            # [N, H] ink per row
    cols = grid.sum(axis=1, dtype=np.float64)            # [N, W] ink per column
    blank = mass <= 0
    safe = np.where(blank, 1.0, mass)
    centroid_row = rows @ np.arange(h, dtype=np.float64) / safe / max(h - 1, 1)
    centroid_col = cols @ np.arange(w, dtype=np.float64) / safe / max(w - 1, 1)
    box = grid > BBOX_LEVEL
    return {
        "mean_intensity": x.mean(axis=1, dtype=np.float64),
        "std_intensity": x.std(axis=1, dtype=np.float64),
        "ink_mass": (x > INK_LEVEL).mean(axis=1, dtype=np.float64),
        "centroid_row": np.where(blank, 0.5, centroid_row),
        "centroid_col": np.where(blank, 0.5, centroid_col),
        "bbox_height": _extent(box.any(axis=2)),
        "bbox_width": _extent(box.any(axis=1)),
    }


def model_features(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """``p_*``, ``confidence``, ``entropy`` and ``predicted_class`` from ``[N, C]``."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be [N, C] with C >= 2, got shape {list(p.shape)}")
    c = p.shape[1]
    out = {name: p[:, i] for i, name in enumerate(probability_names(c))}
    clipped = np.clip(p, 1e-12, 1.0)
    out["confidence"] = p.max(axis=1)
    out["entropy"] = -(p * np.log(clipped)).sum(axis=1) / math.log(c)
    out[PREDICTED_CLASS] = p.argmax(axis=1).astype(np.float64)
    return out


def compute_features(images: np.ndarray, probabilities: np.ndarray,
                     image_shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Every feature of :func:`feature_names` for a batch: ``{name: float64 [N]}``."""
    images = np.asarray(images)
    probabilities = np.asarray(probabilities)
    if len(images) != len(probabilities):
        raise ValueError(f"{len(images)} images but {len(probabilities)} rows of probabilities")
    model = model_features(probabilities)
    image = image_features(images, image_shape)
    return {name: (model.get(name) if name in model else image[name])
            for name in feature_names(probabilities.shape[1])}
