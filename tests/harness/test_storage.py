"""Atomic outputs and run records."""
import pytest

from harness.errors import HarnessError
from harness.runs import RunRecord, RunStore, StepRecord
from harness.storage import atomic_dir


def test_atomic_dir_appears_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "done.bin").write_bytes(b"x")
    assert (target / "done.bin").exists()


def test_atomic_dir_never_overwrites(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(HarnessError, match="refusing to overwrite"):
        with atomic_dir(tmp_path / "out"):
            pass


def test_run_store_round_trip_and_unknown_id(tmp_path):
    store = RunStore(tmp_path)
    rec = RunRecord("r1", "local", steps=[StepRecord("prepare", "prepare")])
    store.create(rec)
    rec.step("prepare").status = "SUCCEEDED"
    store.save(rec)
    assert store.load("r1").step("prepare").status == "SUCCEEDED"
    assert store.list_ids() == ["r1"]
    with pytest.raises(HarnessError, match="no run with id 'nope'.*r1"):
        store.load("nope")
