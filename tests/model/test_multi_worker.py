"""The keras#20585 workaround (model/multi_worker.py), pinned to the Keras it was written
for: with two real workers on loopback, plain ``model.fit`` under
MultiWorkerMirroredStrategy fails the way the module says, each part of the workaround is
needed, and with it ``fit`` trains with callbacks and evaluation. When Keras is upgraded and
this test fails because plain fit works, remove the workaround (see its docstring)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from model import multi_worker

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("mwms_fit_probe.py")


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_sharded_fit_refuses_what_would_differ_between_workers():
    import numpy as np

    class Model:
        def fit(self, *args, **kwargs):
            raise AssertionError("not reached")

    model = Model()
    multi_worker.fit_on_shards(model, strategy=None, seed=0)
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    for kwargs, named in (({"steps_per_epoch": 3}, "steps_per_epoch"),
                          ({"validation_split": 0.2}, "validation_split"),
                          ({"sample_weight": np.ones(8)}, "sample_weight")):
        with pytest.raises(ValueError, match=f"own shard: {named}"):
            model.fit(x, y, batch_size=4, **kwargs)


def test_the_channel_distribution_comes_from_the_toolkit_environment(monkeypatch):
    monkeypatch.setenv("SM_INPUT_DATA_CONFIG", json.dumps(
        {"train": {"S3DistributionType": "ShardedByS3Key"}, "test": {}}))
    assert multi_worker.channel_distribution("train") == "ShardedByS3Key"
    assert multi_worker.channel_distribution("test") == "FullyReplicated"
    monkeypatch.delenv("SM_INPUT_DATA_CONFIG")
    assert multi_worker.channel_distribution("train") == "FullyReplicated"


@pytest.mark.slow
def test_keras_fit_under_two_workers_needs_the_workaround():
    if keras.__version__ != multi_worker.TESTED_KERAS:
        pytest.skip(f"the keras#20585 workaround is pinned to Keras {multi_worker.TESTED_KERAS}; "
                    f"this is {keras.__version__}: rerun the probe and update TESTED_KERAS "
                    "(or remove the workaround if plain fit works)")
    ports = _ports(2)
    procs = []
    for index in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CONFIG")}
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                       "task": {"type": "worker", "index": index}})
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        procs.append(subprocess.Popen([sys.executable, str(PROBE), str(ROOT / "model")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for code, out, err in outputs:
        assert code == 0, err[-2000:]
        results.append({line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                        for line in out.splitlines() if line.split(":", 1)[0]
                        in ("plain", "part1", "workaround", "shards-arrays",
                            "shards-dataset", "multi-worker")})
    for r in results:
        # the bug: Keras's _maybe_symbolic_build reduces the batch tuple (keras#20585)
        assert r["plain"].startswith("error ValueError: Attempt to convert a value (PerReplica"), r
        # then each step's scalar logs are reduced over axis 0
        assert r["part1"].startswith("error ValueError: Invalid reduction dimension 0"), r
        assert r["workaround"].startswith(
            "ok epochs=1 keys=['accuracy', 'loss', 'val_accuracy', 'val_loss']"), r
        # unequal shards: the same number of steps on both workers, from the total rows
        for phase in ("shards-arrays", "shards-dataset"):
            assert r[phase].startswith("ok epochs="), r
    assert [r["multi-worker"] for r in results] == [
        "256 rows here, 416 on all workers, 13 steps of 32 per epoch",
        "160 rows here, 416 on all workers, 13 steps of 32 per epoch"]
    # the workers hold different data; their metrics are the same global ones
    for phase in ("workaround", "shards-arrays", "shards-dataset"):
        assert results[0][phase] == results[1][phase]
