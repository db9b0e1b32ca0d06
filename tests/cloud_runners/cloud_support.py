"""Helpers of the cloud runner tests (the fixtures are in conftest.py)."""
from __future__ import annotations

import copy
import io

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account


def workflow(cfg):
    """The pipeline ``cfg`` names (the MNIST pipeline by default)."""
    from harness.workflow import load_workflow

    return load_workflow(cfg.pipeline, cfg)


def console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200, color_system=None)


def printed(c) -> str:
    """What a ``console()`` printed, whitespace collapsed."""
    return " ".join(c.file.getvalue().split())


def operations(session) -> list[str]:
    """Record the name of every AWS operation ``session``'s clients call from now on."""
    seen: list[str] = []
    session.events.register("before-call", lambda model, **kw: seen.append(model.name))
    return seen


def capture(session, event: str) -> list[dict]:
    """The parameters of every ``event`` call (e.g. 'glue.UpdateJob'), as sent."""
    calls: list[dict] = []
    session.events.register(f"provide-client-params.{event}",
                            lambda params, **kw: calls.append(copy.deepcopy(params)))
    return calls


def answer(session, event: str, parsed: dict, status: int = 200) -> None:
    """Answer every ``event`` call with ``parsed`` without sending it (what moto lacks,
    e.g. Glue UpdateJob or SageMaker StopTrainingJob); status >= 300 makes a ClientError."""
    from botocore.awsrequest import AWSResponse

    session.events.register(f"before-call.{event}",
                            lambda **kw: (AWSResponse("https://aws", status, {}, None), parsed))


def training_only(name: str = "digits", job_name: str = "digits-fit", state_id: str = "fit"):
    """A pipeline of one's own: one training job (no Glue, no processing, no hosting)."""
    from harness.config import PROJECT_ROOT
    from harness.steps import TrainingStep
    from harness.workflow import Workflow, run_path

    fit = TrainingStep(state_id, job_name=job_name, source_dir=PROJECT_ROOT / "model",
                       entry_point="train.py", output_path=run_path("training"),
                       inputs={"train": run_path("data", "train")})
    return Workflow(name, fit)


class Images:
    """Image names without a lookup: ``img/<framework>-<scope>:<version>``."""

    def image(self, framework, version, scope, instance_type, py_version=None):
        return f"img/{framework}-{scope}:{version}"


def stage_context(cfg, step: str, run_id: str = "20261129-120000-ab12"):
    """What a runner gets besides its request (log to a logger of its own, no console)."""
    import logging

    from harness.stages import StageContext

    return StageContext(run_id=run_id, step=step, config=cfg,
                        log=logging.getLogger(f"test.{step}"), announce=lambda m: None)


def resolved_request(wf, state_id: str, doc: dict, images=None, **ctx):
    """One step's concrete request on the cloud backend, placeholders resolved in ``doc``."""
    from harness.placeholders import resolve

    build = wf.build_context("cloud", images or Images(), **ctx)
    return resolve(wf.step(state_id).request(build), doc, state_id)
