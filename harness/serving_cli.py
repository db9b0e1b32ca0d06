"""`harness serve` and `harness predict`: serve a trained model, send it images."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness import uris
from harness.archives import extract_archive, newest_model_version
from harness.errors import HarnessError
from harness.image_files import load_images
from harness.runs import RunStore

if TYPE_CHECKING:
    from harness.endpoints import ServingOptions


def resolve_model_dir(target: str, store: RunStore, scratch: Path) -> Path:
    """A run id, a model.tar.gz or a directory holding ``<version>/saved_model.pb``."""
    path = Path(target)
    if not path.exists() and store.has_run(target):
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


def serve(target: str, store: RunStore, kind: str, model_name: str,
          options: "ServingOptions", console) -> int:
    """Serve until Ctrl+C or SIGTERM, then stop gracefully (in-flight requests finish).
    ``options`` were checked when made (``ServingOptions``: port, poll interval, capture
    percent, ...); the model name is checked here, before any model is unpacked."""
    import signal
    import threading

    import rich.progress

    from harness.endpoints import open_local_endpoint
    from harness.option_checks import check_model_name
    from harness.progress import RichProgress

    check_model_name(model_name, "--model-name")

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
