"""The backend switch: one table from (backend, stage kind) to its runner.

Runners are imported lazily by dotted path, so choosing ``local`` never imports
anything AWS (ZenML's flavor pattern). The emulator and cloud backends add their rows
here when they land; stages do not change.
"""
from __future__ import annotations

import importlib

from harness.errors import ConfigError
from harness.stages import STAGE_KINDS, StageRunner

RUNNERS: dict[tuple[str, str], str] = {
    ("local", "prepare"): "local_runners.prepare:LocalPrepareRunner",
    ("local", "etl"): "local_runners.etl:LocalEtlRunner",
    ("local", "train"): "local_runners.train:LocalTrainingRunner",
    ("local", "evaluate"): "local_runners.evaluate:LocalEvaluateRunner",
    ("local", "deploy"): "local_runners.deploy:LocalDeployRunner",
    ("local", "infer"): "local_runners.infer:LocalInferRunner",
}

# Container images each backend names in its requests. Locally the "image" is the
# in-process trainer and the embedded server; the cloud backend looks the real URIs
# up with sagemaker-core's image_uris.
IMAGES: dict[str, dict[str, str]] = {
    "local": {"training": "local/tensorflow-training:2.19-cpu (in-process)",
              "serving": "local/tensorflow-serving:2.19 (embedded server)"},
}


def available_backends() -> list[str]:
    return sorted({b for b, _ in RUNNERS})


def check_backend(backend: str) -> None:
    missing = [k for k in STAGE_KINDS if (backend, k) not in RUNNERS]
    if missing:
        raise ConfigError(
            f"backend '{backend}' is not available yet (no runner for: {', '.join(missing)})",
            field="backend", expected="one of " + ", ".join(available_backends()))


def runner_for(backend: str, kind: str) -> StageRunner:
    try:
        target = RUNNERS[(backend, kind)]
    except KeyError:
        raise ConfigError(f"no '{kind}' runner for backend '{backend}'", field="backend",
                          expected="one of " + ", ".join(available_backends())) from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls()
