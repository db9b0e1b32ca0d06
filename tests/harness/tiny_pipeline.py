"""A pipeline of one quick step (prepare the bundled sample): what a test starts when it
checks how a pipeline run is started, not what the run does."""
from harness.placeholders import run_path
from harness.steps import PrepareDataStep
from harness.workflow import Workflow


def build(cfg):
    return Workflow("tiny", PrepareDataStep("prepare", output_uri=run_path("data", "raw"),
                                            source=cfg.data.source))
