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
    ("cloud", "prepare"): "cloud_runners.prepare:CloudPrepareRunner",
    ("cloud", "etl"): "cloud_runners.etl:CloudEtlRunner",
    ("cloud", "train"): "cloud_runners.train:CloudTrainingRunner",
    ("cloud", "evaluate"): "cloud_runners.evaluate:CloudEvaluateRunner",
    ("cloud", "deploy"): "cloud_runners.deploy:CloudDeployRunner",
    ("cloud", "infer"): "cloud_runners.infer:CloudInferRunner",
}

# Per backend, what happens before the first step: where the run's data lives, how the
# code reaches the jobs, which images and role the requests name.
SETUPS: dict[str, str] = {
    "local": "harness.local_setup:LocalSetup",
    "cloud": "cloud_runners.setup:CloudSetup",
}


def available_backends() -> list[str]:
    return sorted({b for b, _ in RUNNERS})


def check_backend(backend: str) -> None:
    missing = [k for k in STAGE_KINDS if (backend, k) not in RUNNERS]
    if backend not in SETUPS:
        missing.append("setup")
    if missing:
        raise ConfigError(
            f"backend '{backend}' is not available yet (no runner for: {', '.join(missing)})",
            field="backend", expected="one of " + ", ".join(available_backends()))


def _load(target: str):
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def setup_for(backend: str, cfg):
    """The backend's setup object (see harness.local_setup.LocalSetup for the interface)."""
    try:
        target = SETUPS[backend]
    except KeyError:
        raise ConfigError(f"backend '{backend}' has no setup", field="backend",
                          expected="one of " + ", ".join(sorted(SETUPS))) from None
    return _load(target)(cfg)


def runner_for(backend: str, kind: str) -> StageRunner:
    try:
        target = RUNNERS[(backend, kind)]
    except KeyError:
        raise ConfigError(f"no '{kind}' runner for backend '{backend}'", field="backend",
                          expected="one of " + ", ".join(available_backends())) from None
    return _load(target)()
