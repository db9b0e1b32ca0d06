"""The step kinds a pipeline is written with (see ``harness.workflow``)."""
from harness.steps.base import AFTER, BEFORE, MACHINE, BuildContext, Chain, CodeAsset, Step
from harness.steps.data import PrepareDataStep
from harness.steps.gate import Gate
from harness.steps.glue import GlueStartJobRunStep
from harness.steps.hosting import EndpointConfigStep, EndpointStep, ModelStep, serving_environment
from harness.steps.inference import InferenceStep
from harness.steps.processing import ProcessingInput, ProcessingOutput, ProcessingStep
from harness.steps.start_execution import StartExecutionStep
from harness.steps.training import TrainingStep
from harness.steps.upload import UploadStep
from harness.steps.tuning import (CategoricalParameter, ContinuousParameter, IntegerParameter,
                                  TuningStep)

__all__ = ["AFTER", "BEFORE", "MACHINE", "BuildContext", "Chain", "CodeAsset", "Step",
           "PrepareDataStep", "Gate", "GlueStartJobRunStep", "EndpointConfigStep",
           "EndpointStep", "ModelStep", "serving_environment", "InferenceStep",
           "ProcessingInput", "ProcessingOutput", "ProcessingStep", "TrainingStep",
           "TuningStep", "CategoricalParameter", "ContinuousParameter", "IntegerParameter",
           "UploadStep", "StartExecutionStep", "step_table"]


def step_table(kind: str, output: object) -> tuple[list[str], list[list[object]]] | None:
    """The table a step kind makes of its output (``Step.table``: a tuning job's trials),
    for any kind imported so far (the built-in ones are); None when it has none."""
    cls = Step.kind_class(kind)
    return cls.table(output) if cls is not None and isinstance(output, dict) else None
