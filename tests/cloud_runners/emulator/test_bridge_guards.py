"""Each bridge (SageMaker, EventBridge Scheduler) refuses to install when moto's
internals it relies on changed (``FINGERPRINTS``), names the changed symbol, and leaves
moto as it was."""
from __future__ import annotations

import importlib

import pytest

from cloud_runners.emulator import moto_gaps

# bridge module, its class, a symbol it fingerprints, the moto methods it patches
BRIDGES = [
    ("training_bridge", "TrainingBridge", "moto.sagemaker.models.FakeTrainingJob.__init__",
     [("moto.sagemaker.models", "SageMakerModelBackend", "create_training_job")]),
    ("processing_bridge", "ProcessingBridge",
     "moto.sagemaker.models.FakeProcessingJob.__init__",
     [("moto.sagemaker.models", "SageMakerModelBackend", "create_processing_job")]),
    ("hosting_bridge", "HostingBridge",
     "moto.sagemakerruntime.responses.SageMakerRuntimeResponse.invoke_endpoint",
     [("moto.sagemaker.models", "SageMakerModelBackend", "create_endpoint"),
      ("moto.sagemakerruntime.responses", "SageMakerRuntimeResponse", "invoke_endpoint")]),
    ("tuning_bridge", "TuningBridge",
     "moto.sagemaker.models.HyperParameterTuningJob.describe",
     [("moto.sagemaker.models", "SageMakerModelBackend", "create_hyper_parameter_tuning_job")]),
    # patches nothing: reads moto's scheduler backend from its poller thread
    ("scheduler_bridge", "SchedulerBridge", "moto.scheduler.models.Schedule.__init__", []),
]
IDS = [b[0] for b in BRIDGES]


def _module(name):
    return importlib.import_module(f"cloud_runners.emulator.{name}")


@pytest.mark.parametrize("name, cls, symbol, patched", BRIDGES, ids=IDS)
def test_guard_moto_internals_the_bridge_relies_on_are_unchanged(name, cls, symbol, patched):
    problems = _module(name).check()
    assert not problems, (f"moto changed under cloud_runners/emulator/{name}.py; "
                          "review the bridge for:\n" + "\n".join(problems))


@pytest.mark.parametrize("name, cls, symbol, patched", BRIDGES, ids=IDS)
def test_guard_names_the_changed_symbol(monkeypatch, name, cls, symbol, patched):
    module = _module(name)
    owners = [getattr(importlib.import_module(m), owner) for m, owner, _ in patched]
    originals = [getattr(o, attr) for o, (_, _, attr) in zip(owners, patched)]
    monkeypatch.setitem(module.FINGERPRINTS, symbol, "0" * 16)
    with pytest.raises(moto_gaps.MotoGapsError, match=symbol.replace(".", r"\.")):
        getattr(module, cls)().install(emulator=None)
    for owner, (_, _, attr), original in zip(owners, patched, originals):
        assert getattr(owner, attr) is original
