"""`harness serve` and `harness predict`: serve a trained model, send it images."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness import uris
from harness.archives import extract_archive, newest_model_version
from harness.errors import DataError, HarnessError
from harness.runs import RunStore

if TYPE_CHECKING:
    from harness.endpoints import ServingOptions


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


def serve(target: str, store: RunStore, kind: str, model_name: str,
          options: "ServingOptions", console) -> int:
    """Serve until Ctrl+C or SIGTERM, then stop gracefully (in-flight requests finish)."""
    import signal
    import threading

    import rich.progress

    from harness.endpoints import open_local_endpoint
    from harness.progress import RichProgress

    with tempfile.TemporaryDirectory(prefix="mlharness-serve-") as tmp:
        model_dir = resolve_model_dir(target, store, Path(tmp))
        endpoint = open_local_endpoint(kind, model_dir, model_name, options)
        with rich.progress.Progress(*rich.progress.Progress.get_default_columns(),
                                    rich.progress.DownloadColumn(), console=console,
                                    transient=True) as bars:
            endpoint.start(progress=RichProgress(bars))   # e.g. a TF Serving image pull
        done = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            described = endpoint.describe()
            console.print(f"serving model '{model_name}' version {described.get('ModelVersion')}"
                          f" at {described['EndpointUrl']} ({kind}; Ctrl+C to stop)",
                          highlight=False, soft_wrap=True)
            console.file.flush()
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            endpoint.stop()
    return 0


def predict(files: list[str], url: str, model_name: str, console,
            client_factory=None) -> int:
    """Send the images (batches of 100) and print class and probability per image.
    ``client_factory`` gives the client for a non-HTTP endpoint (a SageMaker endpoint);
    by default the TF Serving REST API at ``url`` is used."""
    from rich.table import Table

    from harness.inference_client import EndpointClient, HttpTfServingTransport

    x = load_images(files)
    client = (client_factory() if client_factory is not None
              else EndpointClient(HttpTfServingTransport(url, model_name)))
    with client:
        result = client.predict_batches(x, 100)
        where = client.transport.url
    table = Table(title=f"{len(x)} image(s) → {where} ({model_name})")
    for col in ("#", "class", "probability"):
        table.add_column(col)
    for i, (cls, probs) in enumerate(zip(result["classes"], result["probabilities"])):
        table.add_row(str(i), str(int(cls)), f"{float(np.max(probs)):.4f}")
    console.print(table)
    return 0
