"""The reference walkthrough's pipeline, written with the harness's pipeline API in the
shape of the Step Functions Data Science SDK: a Glue job (``GlueStartJobRunStep`` with
``--SOURCE_PATH``, ``--OUTPUT_PATH``, ``--TRAIN_PREFIX``, ``--VAL_PREFIX``), a training job
whose script is the walkthrough's own, then the model, the endpoint config and the
endpoint. Its code is the walkthrough's: ``glue_job.py`` (GlueContext, Job, DynamicFrame)
and ``train/train.py`` (pandas CSV channels, ``accuracy=...;``, ``model_dir/<timestamp>``).

    harness run --pipeline examples/reference-walkthrough/pipeline.py:build
    harness run --pipeline examples/reference-walkthrough/pipeline.py:build --backend emulator

The input is the walkthrough's CSV (label, then 784 pixel values 0..255, no header): the
folder ``--data DIR`` names, else one written once from the bundled MNIST sample into
``<runs>/.walkthrough-data/``; an upload step stages it (in the cloud: to S3; locally it
is read where it is).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness import uris
from harness.idx import read_idx
from harness.steps import (EndpointConfigStep, EndpointStep, GlueStartJobRunStep, ModelStep,
                           TrainingStep, UploadStep, serving_environment)
from harness.workflow import Workflow, run_path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "fixtures" / "mnist-sample"


def write_csv(folder: Path, rows: int | None = None) -> Path:
    """The walkthrough's input CSV from the bundled sample (its first ``rows`` digits),
    written once (atomically)."""
    target = folder / "mnist.csv"
    if target.is_file():
        return folder
    images = read_idx(SAMPLE / "train-images-idx3-ubyte.gz").reshape(-1, 784)[:rows]
    labels = read_idx(SAMPLE / "train-labels-idx1-ubyte.gz")[:rows]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{os.getpid()}-mnist.csv"
    np.savetxt(tmp, np.column_stack([labels, images]).astype(np.int64), fmt="%d",
               delimiter=",")
    tmp.replace(target)
    return folder


def input_folder(cfg) -> Path:
    """``data.source`` when it is a folder of CSV files (``--data DIR``), else the CSV
    written from the bundled sample."""
    source = str(cfg.data.source)
    if source not in ("auto", "download", "fixture"):
        folder = uris.local_path(source) if "://" in source else Path(source).expanduser()
        if folder.is_dir() and any(folder.glob("*.csv")):
            return folder.resolve()
    return write_csv(cfg.runs_path() / ".walkthrough-data")


def build(cfg) -> Workflow:
    data = input_folder(cfg)
    upload = UploadStep("upload", sources={"mnist": uris.file_uri(data)},
                        output_uri=run_path("data", "input"))
    output_path = run_path("data", "processed")
    etl = GlueStartJobRunStep(
        "etl", job_name="walkthrough-etl", script=HERE / "glue_job.py",
        arguments={"--SOURCE_PATH": upload.output()["Uris"]["mnist"],
                   "--OUTPUT_PATH": output_path,
                   "--TRAIN_PREFIX": "train", "--VAL_PREFIX": "validation"})
    train = TrainingStep(
        "train", job_name="walkthrough-train", source_dir=HERE / "train",
        entry_point="train.py", output_path=run_path("training"),
        inputs={"train": f"{output_path}/train", "validation": f"{output_path}/validation"},
        hyperparameters={"epochs": cfg.train.hyperparameters.get("epochs", 2)},
        metric_definitions=[{"Name": "accuracy", "Regex": "accuracy=(.*?);"},
                            {"Name": "loss", "Regex": "loss=(.*?);"}],
        instance_type="ml.m5.xlarge")
    model = ModelStep("model", model_name="walkthrough",
                      model_data=train.output()["ModelArtifacts"]["S3ModelArtifacts"],
                      environment=serving_environment("walkthrough"))
    endpoint_config = EndpointConfigStep("endpoint-config",
                                         endpoint_config_name="walkthrough-config",
                                         model_name=model.model_name,
                                         instance_type="ml.m5.large")
    endpoint = EndpointStep("endpoint", endpoint_name="walkthrough-endpoint",
                            endpoint_config_name=endpoint_config.endpoint_config_name,
                            poll_seconds=1)
    return Workflow("walkthrough",
                    upload >> etl >> train >> model >> endpoint_config >> endpoint)
