"""Helpers of the runner and bridge tests: the default pipeline's requests, resolved the
way a run resolves them, and the context a runner gets."""
from __future__ import annotations

import logging
from typing import Any

PREPARED = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10}


def pipeline(**overrides: Any):
    """``(cfg, wf)``: pipeline.yaml's configuration with ``overrides`` (dotted keys) and the
    workflow it names (the MNIST pipeline)."""
    from harness.config import load_config
    from harness.workflow import load_workflow

    cfg = load_config(overrides=overrides)
    return cfg, load_workflow(cfg.pipeline, cfg)


def run_document(base_uri: str, run_id: str = "r1", prepared: dict | None = None,
                 **outputs: Any) -> dict[str, Any]:
    """The run's state document: run id, base URI, the prepare step's output (the shape
    of MNIST, the raw data under ``<base>/data/raw``) and other steps' outputs by result
    key (``Train={...}``)."""
    prepare = {**PREPARED, "RawUri": f"{base_uri.rstrip('/')}/data/raw", **(prepared or {})}
    return {"RunId": run_id, "BaseUri": base_uri, "CodeUri": f"{base_uri}/code",
            "Prepare": prepare, **outputs}


def request(wf, state_id: str, doc: dict[str, Any], backend: str = "local", images=None,
            **build: Any) -> dict[str, Any]:
    """One step's concrete request, placeholders resolved in ``doc`` (local images by
    default; ``build``: role, roles, tags, poll_seconds)."""
    from harness.local_setup import LocalImages
    from harness.placeholders import resolve

    ctx = wf.build_context(backend, images or LocalImages(), **build)
    return resolve(wf.step(state_id).request(ctx), doc, state_id)


def stage_code(cfg, wf, base_uri: str, *state_ids: str) -> dict[str, str]:
    """Stage the code of ``state_ids`` (every step's without) under ``<base>/code`` as a
    local run does; CodeAsset target -> URI."""
    from harness.local_setup import LocalSetup

    assets = wf.code() if not state_ids else [a for s in state_ids for a in wf.step(s).code()]
    return LocalSetup(cfg).stage_code(assets, base_uri)


def glue_jobs(cfg, wf, code_uris: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The Glue job definitions a local run registers (``ctx.glue_jobs``)."""
    from harness.local_setup import LocalSetup

    build = wf.build_context("local")
    setup = [r for s in wf.steps for r in s.setup_requests(code_uris, build)]
    from harness.stages import GLUE_JOBS
    return LocalSetup(cfg).create(setup, "r1").get(GLUE_JOBS, {})


def stage_context(cfg, step: str, run_id: str = "r1", **fields: Any):
    """What a runner gets besides its request: a logger of its own, no console output;
    ``fields``: progress, registry, ..."""
    from harness.stages import StageContext

    return StageContext(run_id=run_id, step=step, config=cfg,
                        log=logging.getLogger(f"test.{step}.{run_id}"),
                        announce=lambda msg: None, **fields)


HOSTING = ("model", "endpoint-config", "endpoint")


def hosting_requests(wf, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The CreateModel, CreateEndpointConfig and CreateEndpoint requests of the pipeline's
    hosting steps (``doc`` holds the training job's output: ``Train.ModelArtifacts``)."""
    return {s: request(wf, s, doc) for s in HOSTING}


def deploy(cfg, requests: dict[str, dict[str, Any]], resources, registry=None,
           run_id: str = "r1") -> dict[str, dict[str, Any]]:
    """Run the hosting steps' local runners in order with one registry, as a run does;
    every step's output. The endpoint stops when ``resources`` (an ExitStack) closes."""
    from local_runners.create_model import LocalModelRunner
    from local_runners.endpoint import LocalEndpointRunner
    from local_runners.endpoint_config import LocalEndpointConfigRunner

    runners = {"model": LocalModelRunner, "endpoint-config": LocalEndpointConfigRunner,
               "endpoint": LocalEndpointRunner}
    registry = {} if registry is None else registry
    return {s: runners[s]().run(requests[s], stage_context(
        cfg, s, run_id, registry=registry, resources=resources)) for s in HOSTING}
