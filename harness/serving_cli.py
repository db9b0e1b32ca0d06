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
        from harness.monitoring import target_of_run

        try:  # the model the run's endpoint served (its CreateModel's ModelDataUrl)
            model_data = target_of_run(store, target).model_data
        except HarnessError:
            raise HarnessError(f"run {target} deployed no model", file=str(
                store.run_dir(target)), expected="a run that created its endpoint "
                "(harness runs)") from None
        if not model_data.startswith("file://"):
            raise HarnessError(f"run {target}'s model is not on this machine",
                               got=model_data, expected="a local run's model")
        path = uris.local_path(model_data)
    if path.is_file():
        extract_archive(path, scratch, what="model archive",
                        expected="a model.tar.gz holding <version>/saved_model.pb")
        path = scratch
    newest_model_version(path)  # a clear error now rather than in the server
    return path


def run_capture(target: str, store: RunStore) -> tuple[str | None, str | None]:
    """When ``target`` is a run whose endpoint captured its traffic: the capture folder and
    the endpoint's name, so that ``harness serve RUN`` captures where the run's endpoint
    did and ``harness monitor RUN`` sees that traffic too; else (None, None)."""
    from harness.monitoring import target_of_run

    if not store.has_run(target):
        return None, None
    try:
        run = target_of_run(store, target)
    except HarnessError:
        return None, None
    if not run.capture_uri or not run.capture_uri.startswith("file://"):
        return None, None
    return str(uris.local_path(run.capture_uri)), run.endpoint_name


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


def serve_command(cfg, args, console) -> int:
    """``harness serve MODEL``: the options from the flags and the ``deploy:`` config. A
    run's model captures its traffic where the run's endpoint did (``run_capture``)
    unless ``--capture-dir`` says otherwise."""
    from harness.endpoints import ServingOptions

    d = cfg.deploy
    store = RunStore(cfg.runs_path())
    capture_dir, endpoint_name = args.capture_dir, None
    kind = args.server or d.server
    if capture_dir is None and kind == "embedded":  # the container cannot capture
        capture_dir, endpoint_name = run_capture(args.served, store)
    options = ServingOptions(host=args.host, port=args.port,
                             max_batch_size=d.max_batch_size,
                             batch_timeout_micros=d.batch_timeout_micros,
                             capture_dir=capture_dir, endpoint_name=endpoint_name,
                             capture_percent=args.capture_percent,
                             version_poll_seconds=args.poll_seconds,
                             check_input_range=not args.no_input_range_check)
    return serve(args.served, store, kind,
                 args.model_name or d.model_name, options, console)


def predict_command(cfg, args, console) -> int:
    """``harness predict FILES``: to ``--url`` (TF Serving REST) or a SageMaker endpoint."""
    factory = None
    if args.sagemaker_endpoint:
        def factory():
            # the cloud package is imported only here: the core stays boto3-free
            from cloud_runners.aws import client, session_for
            from cloud_runners.endpoint_sagemaker import SageMakerEndpoint
            session = session_for(cfg)
            return SageMakerEndpoint(args.sagemaker_endpoint, client(session, "sagemaker", cfg),
                                     client(session, "sagemaker-runtime", cfg),
                                     poll_seconds=1.0, step="predict").start(timeout=5).client()
    return predict(args.files, args.url, args.model_name or cfg.deploy.model_name, console,
                   factory)
