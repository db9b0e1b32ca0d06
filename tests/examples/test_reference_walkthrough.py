"""examples/reference-walkthrough/: the walkthrough's own Glue job (GlueContext, Job,
DynamicFrame; CSV in, divided by 255, CSV out) and training script (pandas CSV channels,
``accuracy=...;`` metric lines, ``model_dir/<timestamp>``), in a workflow of the Data
Science SDK's shape, run unchanged on the local backend and on the emulator: both
succeed, with the same metric from the user's regex and a served model that answers."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.config import load_config
from harness.workflow import load_workflow

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = f"{ROOT / 'examples' / 'reference-walkthrough' / 'pipeline.py'}:build"
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]


def _run(backend: str, runs: Path, data: Path):
    cfg = load_config(overrides={"runs_dir": str(runs), "data.source": str(data),
                                 "train.hyperparameters.epochs": 3, "cloud.poll_seconds": 0.2})
    return load_workflow(PIPELINE, cfg).run(backend, config=cfg)


def _walkthrough_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("walkthrough_pipeline", PIPELINE[:-6])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from cloud_runners import images

    folder = tmp_path_factory.mktemp("walkthrough")
    # the walkthrough's CSV, 1,500 digits of the bundled sample (--data DIR)
    data = _walkthrough_module().write_csv(folder / "csv", rows=1500)
    local = _run("local", folder / "runs", data)
    try:
        url = local.summary["endpoint_url"]
        answer = _predict(url, data)
    finally:
        local.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "IMAGE_CACHE", folder / "image_uris.json")
        emulated = _run("emulator", folder / "runs", data)
    return {"local": local, "emulator": emulated, "answer": answer}


def _predict(url: str, data: Path) -> dict:
    """Ten digits of the walkthrough's CSV, normalised as the Glue job does, through the
    endpoint's TF Serving REST API."""
    import urllib.request

    rows = np.loadtxt(data / "mnist.csv", delimiter=",",
                      max_rows=10, dtype=np.float64)
    body = json.dumps({"instances": (rows[:, 1:] / 255.0).round(5).tolist()}).encode()
    request = urllib.request.Request(f"{url}/v1/models/walkthrough:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions = np.asarray(json.load(response)["predictions"])
    return {"labels": rows[:, 0].astype(int), "predicted": predictions.argmax(axis=1)}


def test_it_runs_locally_with_the_walkthroughs_own_scripts(runs):
    result = runs["local"]
    assert result.record.status == "SUCCEEDED"
    assert [s.name for s in result.record.steps] == [
        "upload", "etl", "train", "model", "endpoint-config", "endpoint"]
    etl = result.output("etl")
    assert etl["JobRunState"] == "SUCCEEDED"
    log = (result.run_dir / result.record.step("etl").log).read_text()
    assert "runner glue-compat" in log  # auto: the script imports awsglue.context
    # the Glue job's CSV output: label, then 784 values in 0..1
    processed = result.run_dir / "data" / "processed"
    (part,) = (processed / "train").glob("*.csv")
    first = np.loadtxt(part, delimiter=",", max_rows=1)
    assert first.shape == (785,) and 0 <= first[1:].min() and first[1:].max() <= 1.0
    assert first[1:].max() > 0
    # the user's metric regex read the script's line; the model version is a timestamp
    metrics = {m["MetricName"]: m["Value"] for m in result.output("train")["FinalMetricDataList"]}
    assert metrics["accuracy"] > 0.8
    model = result.output("train")["ModelArtifacts"]["S3ModelArtifacts"]
    with tarfile.open(model.removeprefix("file://")) as tar:
        versions = {n.split("/")[0] for n in tar.getnames() if n.endswith("saved_model.pb")}
    (version,) = versions
    assert version.isdigit() and int(version) > 1_700_000_000  # seconds since 1970
    answer = runs["answer"]
    assert (answer["predicted"] == answer["labels"]).mean() >= 0.7


def test_the_same_workflow_runs_on_the_emulator(runs):
    result = runs["emulator"]
    assert result.record.status == "SUCCEEDED" and result.record.backend == "emulator"
    assert result.output("etl")["JobRunState"] == "SUCCEEDED"
    local = {m["MetricName"]: m["Value"]
             for m in runs["local"].output("train")["FinalMetricDataList"]}
    emulated = {m["MetricName"]: m["Value"]
                for m in result.output("train")["FinalMetricDataList"]}
    assert emulated == pytest.approx(local, abs=1e-4)  # same data, script and seed
    assert result.output("endpoint")["EndpointStatus"] == "InService"
