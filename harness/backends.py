"""The backend table: ``local``, ``emulator`` and ``cloud``, each running a whole workflow.

- ``local``: the in-process executor (``harness.executor``): every step's local runner;
- ``emulator``: the compiled state machine on the embedded AWS emulator, with compute
  bridges that run the local runners (``cloud_runners.emulator.backend``);
- ``cloud``: the compiled state machine on AWS Step Functions (``cloud_runners.cloud_run``).

Backends are imported lazily by dotted path (ZenML's flavor pattern): choosing ``local``
never imports boto3 or moto. Which runner a step uses is the step kind's business
(``Step.local_runner``, ``Step.cloud_runner``), not this table's.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from harness.errors import ConfigError

BACKENDS: dict[str, str] = {
    "local": "harness.executor:LocalBackend",
    "emulator": "cloud_runners.emulator.backend:EmulatorBackend",
    "cloud": "cloud_runners.cloud_run:CloudBackend",
}


class Backend(ABC):
    """Runs one workflow once; returns a ``harness.executor.RunResult``. A HarnessError it
    raises carries the run's record (``run_record``) when one was made."""

    name: ClassVar[str] = ""

    @abstractmethod
    def run(self, wf: Any, cfg: Any, *, inputs: dict[str, Any] | None = None,
            **options: Any) -> Any:
        """Options: run_id, resume, from_step (local), progress, announce, on_step,
        config_file."""


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def load(target: str) -> Any:
    """The object a ``"package.module:Name"`` path names."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def backend_for(name: str) -> Backend:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}", field="backend",
                          expected="one of " + ", ".join(available_backends())) from None
    return load(target)()
