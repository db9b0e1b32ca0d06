"""The pipeline, defined once: steps, their order, the evaluation gate.

Each step names its stage kind and builds its request from the configuration, the
run's layout and the outputs of earlier steps. The local executor walks these steps;
the Step Functions compiler (cloud issue) turns the same list into ASL.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from harness import requests as rq
from harness.config import PipelineConfig


@dataclass
class BuildContext:
    """Everything a request builder may read."""

    cfg: PipelineConfig
    layout: rq.Layout
    names: rq.Names
    images: dict[str, str]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    role: str | None = None

    @property
    def processed(self) -> str:
        return self.outputs["etl"]["OutputUri"]


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    title: str
    build: Callable[[BuildContext], dict[str, Any]]


@dataclass(frozen=True)
class Gate:
    """Stop after ``step`` unless its output says the model passed (``Passed``)."""

    step: str

    def check(self, output: dict[str, Any]) -> tuple[bool, str]:
        value = output["Metrics"][output["Metric"]]
        passed = bool(output["Passed"])
        verdict = "at or above" if passed else "below"
        return passed, (f"model {verdict} threshold: {output['Metric']} = {value:.4f}, "
                        f"threshold {output['Threshold']:.4f}")


STEPS: list[Step] = [
    Step("prepare", "prepare", "obtain MNIST and split it",
         lambda b: rq.prepare_request(b.cfg, b.layout)),
    Step("etl", "etl", "Glue ETL script on Spark",
         lambda b: rq.etl_request(b.cfg, b.layout, b.outputs["prepare"])),
    Step("train", "train", "SageMaker TensorFlow training job",
         lambda b: rq.training_request(b.cfg, b.layout, b.names, b.outputs["prepare"],
                                       b.images["training"], b.role, b.processed)),
    Step("evaluate", "evaluate", "metrics on the test split",
         lambda b: rq.evaluate_request(b.cfg, b.layout, b.outputs["train"], b.processed)),
    Step("deploy", "deploy", "model, endpoint config, endpoint",
         lambda b: rq.hosting_requests(b.cfg, b.names,
                                       b.outputs["train"]["ModelArtifacts"]["S3ModelArtifacts"],
                                       b.images["serving"], b.role, b.layout.capture)),
    Step("infer", "infer", "test split through the endpoint",
         lambda b: rq.infer_request(b.cfg, b.layout, b.outputs["deploy"], b.processed)),
]

GATE = Gate(step="evaluate")


def step_names() -> list[str]:
    return [s.name for s in STEPS]


def get_step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    from harness.errors import ConfigError
    raise ConfigError(f"no step named {name!r}", field="--from",
                      expected="one of " + ", ".join(step_names()))
