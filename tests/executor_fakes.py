"""Stand-in runners for the executor's own tests (records, failure, resume, gate).

They return outputs of the real shapes without Spark or TensorFlow; the real runners
are exercised by their own tests and by the end-to-end test.
"""
import os

from harness import uris
from harness.errors import DataError
from harness.stages import StageRunner

CALLS: list[str] = []


class FakePrepare(StageRunner):
    kind = "prepare"

    def run(self, request, ctx):
        CALLS.append("prepare")
        ctx.log.info("prepared")
        return {"Source": "fixture", "SourceLocation": "fake", "RawUri": request["OutputUri"],
                "ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10,
                "Counts": {"train": 8, "validation": 1, "test": 1}, "Seed": request["Seed"]}


class FakeEtl(StageRunner):
    kind = "etl"

    def run(self, request, ctx):
        CALLS.append("etl")
        if os.environ.get("FAKE_FAIL") == "etl":
            raise DataError("corrupt raw data", file="raw/train/part-00000.parquet")
        return {"JobName": request["JobName"], "JobRunState": "SUCCEEDED",
                "OutputUri": request["Arguments"]["--output_uri"]}


class FakeTrain(StageRunner):
    kind = "train"

    def run(self, request, ctx):
        CALLS.append("train")
        out = uris.join(request["OutputDataConfig"]["S3OutputPath"], request["TrainingJobName"],
                        "output", "model.tar.gz")
        return {"TrainingJobName": request["TrainingJobName"], "TrainingJobStatus": "Completed",
                "ModelArtifacts": {"S3ModelArtifacts": out},
                "FinalMetricDataList": [{"MetricName": "test:accuracy", "Value": 0.97}]}


class FakeEvaluate(StageRunner):
    kind = "evaluate"

    def run(self, request, ctx):
        CALLS.append("evaluate")
        acc = float(os.environ.get("FAKE_ACCURACY", "0.97"))
        return {"EvaluationUri": uris.join(request["OutputUri"], "evaluation.json"),
                "Metrics": {"accuracy": acc}, "Metric": request["Metric"],
                "Threshold": request["Threshold"], "Passed": acc >= request["Threshold"]}


class FakeDeploy(StageRunner):
    kind = "deploy"

    def run(self, request, ctx):
        CALLS.append("deploy")
        return {"EndpointName": request["CreateEndpoint"]["EndpointName"],
                "EndpointStatus": "InService", "EndpointUrl": "http://127.0.0.1:1"}


class FakeInfer(StageRunner):
    kind = "infer"

    def run(self, request, ctx):
        CALLS.append("infer")
        acc = float(os.environ.get("FAKE_INFER_ACCURACY", os.environ.get("FAKE_ACCURACY", "0.97")))
        return {"Accuracy": acc, "Count": 1,
                "PredictionsUri": uris.join(request["OutputUri"], "predictions.jsonl")}
