"""`harness serve` and `harness predict`: serve a trained model, send it images."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from harness import uris
from harness.archives import extract_archive, newest_model_version
from harness.errors import DataError, HarnessError
from harness.runs import RunStore


def resolve_model_dir(target: str, store: RunStore, scratch: Path) -> Path:
    """A run id, a model.tar.gz or a directory holding ``<version>/saved_model.pb``."""
    path = Path(target)
    if not path.exists() and (store.run_dir(target) / "record.json").exists():
        summary = store.summary(target)
        if summary is None:
            raise HarnessError(f"run {target} has no model (it did not finish)",
                               file=str(store.run_dir(target)),
                               expected="a run that SUCCEEDED (harness runs)")
        path = uris.local_path(summary["artifacts"]["model"])
    if path.is_file():
        extract_archive(path, scratch, what="model archive",
                        expected="a model.tar.gz holding <version>/saved_model.pb")
        path = scratch
    newest_model_version(path)  # a clear error now rather than in the server
    return path


def load_images(files: list[str]) -> np.ndarray:
    """Images as float32 [N, H*W] in [0, 1], from IDX image files, PNG files or .npy."""
    from harness.idx import read_idx

    rows = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise DataError("file not found", file=name,
                            expected="an IDX images file, a PNG or a .npy file")
        if path.suffix.lower() == ".png":
            import matplotlib.image as mpimg
            img = mpimg.imread(path)  # PNG: floats in [0, 1]
            if img.ndim == 3:
                img = img[..., :3].mean(axis=2)
            rows.append(img.reshape(1, -1).astype(np.float32))
        elif path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False).astype(np.float32)
            arr = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(1, -1)
            rows.append(arr / 255.0 if arr.max(initial=0) > 1 else arr)
        else:
            arr = read_idx(path, expect_ndim=3)
            rows.append(arr.reshape(len(arr), -1).astype(np.float32) / 255.0)
    widths = {r.shape[1] for r in rows}
    if len(widths) != 1:
        raise DataError("the images do not all have the same size", file=", ".join(files),
                        expected="one image size", got=sorted(widths))
    return np.concatenate(rows)


def serve(target: str, store: RunStore, args: list[str]) -> int:
    from local_runners import model_server
    with tempfile.TemporaryDirectory(prefix="mlharness-serve-") as tmp:
        model_dir = resolve_model_dir(target, store, Path(tmp))
        return model_server.main(["--model-dir", str(model_dir), *args])


def predict(files: list[str], url: str, model_name: str, console) -> int:
    from rich.table import Table

    from harness.inference_client import EndpointClient, HttpTfServingTransport

    x = load_images(files)
    with EndpointClient(HttpTfServingTransport(url, model_name)) as client:
        result = client.predict_batches(x, 100)
    table = Table(title=f"{len(x)} image(s) → {url} ({model_name})")
    for col in ("#", "class", "probability"):
        table.add_column(col)
    for i, (cls, probs) in enumerate(zip(result["classes"], result["probabilities"])):
        table.add_row(str(i), str(int(cls)), f"{float(np.max(probs)):.4f}")
    console.print(table)
    return 0
