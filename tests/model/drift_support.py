"""Helpers for the drift monitoring tests: real digits from the bundled sample, a cheap
real classifier (nearest class centroid with a softmax over distances, fitted on half of
the sample: no TensorFlow), and capture files written with the model server's own
record and body encoders."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson

from harness.idx import read_idx
from local_runners.serve_capture import capture_record
from local_runners.serve_codec import encode_predictions

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "mnist-sample"
WHEN = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 sample digits, shuffled with a fixed seed, scaled to [0, 1]."""
    x = read_idx(SAMPLE / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    y = read_idx(SAMPLE / "train-labels-idx1-ubyte.gz").astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    return x[idx], y[idx]


class CentroidModel:
    """Nearest class centroid; probabilities = softmax(-squared distance / temperature)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, temperature: float = 4.0):
        self.centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])
        self.temperature = temperature

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = ((x[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        z = -d / self.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def capture_lines(images: np.ndarray, probabilities: np.ndarray, when: dt.datetime = WHEN,
                  batch: int = 1) -> list[bytes]:
    """JSON Lines capture records (``batch`` images per request), as the server writes."""
    lines = []
    for i in range(0, len(images), batch):
        x, p = images[i:i + batch], probabilities[i:i + batch]
        request = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
        response = encode_predictions({"probabilities": p,
                                       "classes": p.argmax(axis=1).astype(np.int64)}, "row")
        record = capture_record(request, "application/json", response, "application/json",
                                when + dt.timedelta(seconds=i))
        lines.append(orjson.dumps(record))
    return lines


def write_capture(root: Path, lines: list[bytes], endpoint: str = "digits",
                  when: dt.datetime = WHEN, name: str = "00-00-000-a.jsonl") -> Path:
    """Write lines where SageMaker puts them: <endpoint>/AllTraffic/yyyy/mm/dd/hh/."""
    folder = root / endpoint / "AllTraffic" / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


_CACHE: dict = {}


def setup(tmp_root: Path) -> dict:
    """Digits, the centroid model (fitted on 2,500 digits), a baseline written from 1,500
    held-out validation digits, and 1,000 further held-out digits for windows."""
    if "x" not in _CACHE:
        x, y = digits()
        model = CentroidModel(x[:2500], y[:2500])
        _CACHE.update(x=x, y=y, model=model)
    from model.drift_baseline import write_baseline

    x, y, model = _CACHE["x"], _CACHE["y"], _CACHE["model"]
    paths = write_baseline(tmp_root / "baseline", x[2500:4000], model.predict(x[2500:4000]))
    return {"x": x[4000:], "y": y[4000:], "model": model, **paths}
