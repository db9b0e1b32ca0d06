"""Labels join for ``harness monitor --retrain`` (harness/retrain.py): Model Monitor's
ground-truth lines matched to capture records by eventId, the retraining folder."""
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from harness import retrain
from harness.idx import read_idx, write_idx
from local_runners.serve_capture import capture_record

T = dt.datetime(2026, 12, 1, 12, 30, 5, tzinfo=dt.timezone.utc)


def gt(event, data, encoding="CSV"):
    return json.dumps({"groundTruthData": {"data": data, "encoding": encoding},
                       "eventMetadata": {"eventId": event}, "eventVersion": "0"})


def write_capture(root: Path, records: dict[str, np.ndarray], when=T) -> Path:
    folder = root / "ep" / "AllTraffic" / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for event, x in records.items():
        body = json.dumps({"instances": x.tolist()}).encode()
        out = json.dumps({"predictions": [[0.1] * 10] * len(x)}).encode()
        lines.append(json.dumps(capture_record(body, "application/json", out,
                                               "application/json", when, event)))
    (folder / f"{len(list(folder.iterdir()))}.jsonl").write_text("\n".join(lines) + "\n")
    return root / "ep"


def images(n, value=0.5):
    return np.full((n, 16), value, np.float32)


def test_read_labels_counts_bad_lines_and_keeps_good_ones(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text("\n".join([
        gt("a", "1,2"), "not json", "[1, 2]", json.dumps({"groundTruthData": {"data": "1"}}),
        gt("b", "x"), gt("c", "-1"), gt("d", "1.5"), gt("e", "3", "BASE64"),
        gt("a", "4,4"), gt("f", "[3, 4]", "JSON"), gt("g", 7), ""]) + "\n")
    labels = retrain.read_labels(f)
    assert labels.by_event == {"a": [1, 2], "f": [3, 4], "g": [7]}
    assert labels.lines == 11
    assert dict(labels.bad) == {"bad_json": 2, "missing_field": 1, "bad_label": 3,
                                "bad_encoding": 1, "duplicate_event_id": 1}
    assert labels.first_at["bad_json"] == f"{f}:2"


def test_a_file_with_no_usable_label_is_an_error_naming_it(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text("garbage\n" + gt("a", "seven") + "\n")
    with pytest.raises(retrain.LabelsError) as e:
        retrain.read_labels(f)
    assert str(f) in str(e.value) and "no usable label" in str(e.value)
    assert e.value.exit_code == 2
    with pytest.raises(retrain.LabelsError, match="not found"):
        retrain.read_labels(tmp_path / "missing.jsonl")


def test_join_by_event_id_counts_unknown_ids_and_count_mismatches(tmp_path):
    root = write_capture(tmp_path / "capture", {"a": images(2, 0.2), "b": images(3),
                                                "c": images(1), "u": images(1)})
    f = tmp_path / "labels.jsonl"
    f.write_text("\n".join([gt("a", "1,2"), gt("b", "1,2"), gt("c", "10"),
                            gt("zzz", "4")]) + "\n")
    labels = retrain.read_labels(f)
    records = retrain.captured_records(root, 16, None, None)
    assert sorted(records) == ["a", "b", "c", "u"]
    joined = retrain.join(labels, records, (4, 4), 10, str(f))
    assert joined.labels.tolist() == [1, 2] and joined.images.shape == (2, 4, 4)
    assert joined.images.dtype == np.uint8 and int(joined.images.max()) == 51  # 0.2 * 255
    assert joined.records == 1 and joined.unlabelled_records == 3
    assert dict(labels.bad) == {"count_mismatch": 1, "label_out_of_range": 1,
                                "unknown_event_id": 1}
    assert "2 labels, 3 instances" in labels.first_at["count_mismatch"]


def test_only_records_inside_the_window_are_joined(tmp_path):
    root = tmp_path / "capture"
    write_capture(root, {"early": images(1)}, T - dt.timedelta(hours=2))
    write_capture(root, {"in": images(1)}, T)
    records = retrain.captured_records(root / "ep", 16, "2026-12-01T12:30:00Z",
                                       "2026-12-01T12:31:00Z")
    assert sorted(records) == ["in"]
    f = tmp_path / "labels.jsonl"
    f.write_text(gt("early", "3") + "\n")
    with pytest.raises(retrain.LabelsError) as e:
        retrain.join(retrain.read_labels(f), records, (4, 4), 10, str(f))
    assert str(f) in str(e.value) and "unknown_event_id" in str(e.value)


def fake_run(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_idx(data / "sample-images-idx3-ubyte.gz", np.zeros((20, 4, 4), np.uint8))
    write_idx(data / "sample-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    run_dir = tmp_path / "runs" / "20261201-120000-abcd"
    (run_dir / "steps" / "prepare").mkdir(parents=True)
    (run_dir / "steps" / "prepare" / "output.json").write_text(json.dumps(
        {"Source": "directory", "SourceLocation": str(data), "RawUri": "file:///x",
         "ImageHeight": 4, "ImageWidth": 4, "NumClasses": 10,
         "Counts": {"train": 16, "validation": 2, "test": 2}}))
    return run_dir


def joined_two() -> retrain.Joined:
    return retrain.Joined(np.full((2, 4, 4), 255, np.uint8), np.array([3, 4], np.uint8), 1, 0,
                          retrain.Labels({}, {}))


def test_retrain_folder_holds_the_runs_files_and_the_captures(tmp_path):
    from local_runners.prepare import find_pairs

    run_dir = fake_run(tmp_path)
    check_dir = run_dir / "monitoring" / "20261201T123000000000Z"
    check_dir.mkdir(parents=True)
    dest, info = retrain.build_dataset(run_dir, check_dir, joined_two())
    assert dest == check_dir / "retrain-data"
    assert [p.name for p in check_dir.iterdir() if p.name.startswith(".")] == []
    prefixes = [prefix for prefix, _, _ in find_pairs(dest)]
    assert prefixes == [f"captures-{check_dir.name}", "sample"]
    assert read_idx(dest / f"captures-{check_dir.name}-labels-idx1-ubyte.gz").tolist() == [3, 4]
    assert info["original_examples"] == 20 and info["captured_examples"] == 2
    assert json.loads((check_dir / "retrain.json").read_text())["captured_records"] == 1
    with pytest.raises(Exception, match="already exists"):  # never overwritten
        retrain.build_dataset(run_dir, check_dir, joined_two())


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    run_dir = fake_run(tmp_path)
    check_dir = run_dir / "monitoring" / "t"
    check_dir.mkdir(parents=True)

    def boom(path, array):
        raise OSError("disk full")

    monkeypatch.setattr(retrain, "write_idx", boom)
    with pytest.raises(OSError):
        retrain.build_dataset(run_dir, check_dir, joined_two())
    assert list(check_dir.iterdir()) == []


def test_a_run_without_prepare_output_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    (run_dir / "steps").mkdir(parents=True)
    with pytest.raises(retrain.HarnessError, match="no prepare step output"):
        retrain.source_files(run_dir)


@pytest.mark.parametrize("argv, message", [
    (["--retrain"], "--labels"), (["--labels", "x.jsonl"], "only when retraining"),
    (["--retrain", "--labels", "/nonexistent/labels.jsonl"], "labels file not found")])
def test_monitor_retrain_flags_are_checked_first(tmp_path, capsys, argv, message):
    from harness.cli import main
    code = main(["monitor", "no-such-run", "--runs-dir", str(tmp_path), *argv])
    assert code == 2
    assert message in capsys.readouterr().out


class _Cfg:
    class monitor:
        @staticmethod
        def model_dump():
            return {}

    def __init__(self, root):
        self.root = root

    def runs_path(self):
        return self.root


@pytest.mark.parametrize("flags, drifted, status, run_code, exit_code, retrained", [
    (["--retrain"], False, "checked", 0, 0, False),          # no drift: no retrain
    (["--retrain"], True, "checked", 0, 0, True),
    (["--retrain"], True, "checked", 1, 1, True),            # the gate said no
    (["--retrain-always"], False, "checked", 0, 0, True),
    (["--retrain"], False, "no_data", 0, 1, False),          # nothing to check
])
def test_monitor_retrains_only_when_asked_and_drift_was_found(
        tmp_path, monkeypatch, flags, drifted, status, run_code, exit_code, retrained):
    import argparse

    from rich.console import Console

    from harness import monitor_cli, monitoring

    labels = tmp_path / "labels.jsonl"
    labels.write_text(gt("a", "1") + "\n")
    target = monitoring.MonitorTarget("r", tmp_path, "ep", "file:///c", "file:///m")
    features = [{"name": "ink_mass", "drifted": drifted}]
    monkeypatch.setattr(monitoring, "find_target", lambda store, ref: target)
    monkeypatch.setattr(monitoring, "check", lambda *a, **k: (
        {"status": status, "features": features}, tmp_path / "check"))
    calls = []
    monkeypatch.setattr(retrain, "prepare_retrain_data", lambda *a: (
        calls.append(a) or tmp_path / "data", {"captured_examples": 1, "captured_records": 1,
                                               "original_examples": 20,
                                               "unlabelled_records": 0, "label_problems": {}}))
    monkeypatch.setattr(retrain, "start_run", lambda *a: (run_code, "new-run"))
    monkeypatch.setattr("harness.cli.overrides_of", lambda args: {})
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    monitor_cli.add_parser(sub, lambda p: None, lambda *a: 0)
    args = parser.parse_args(["monitor", "r", *flags, "--labels", str(labels)])
    console = Console(record=True, width=200)
    assert monitor_cli.monitor(_Cfg(tmp_path), args, console) == exit_code
    assert bool(calls) == retrained
    text = console.export_text()
    if retrained:
        assert "new-run" in text
    elif status == "checked":
        assert "not retraining" in text


def test_the_retrain_config_is_the_runs_own_with_the_new_data_and_overrides(tmp_path):
    from harness.config import load_config
    from harness.runs import RunStore

    store = RunStore(tmp_path / "runs")
    run_dir = store.run_dir("20261201-120000-abcd")
    run_dir.mkdir(parents=True)
    stored = load_config(None, {"evaluate.threshold": 0.9, "deploy.keep_serving": True,
                                "data.source": "fixture"}).model_dump(mode="json")
    (run_dir / "config.json").write_text(json.dumps(stored))
    cfg = retrain.retrain_config(store, "20261201-120000-abcd", tmp_path / "data",
                                 {"train.hyperparameters.epochs": 1, "runs_dir": "elsewhere"})
    assert cfg.evaluate.threshold == 0.9 and cfg.data.source == str(tmp_path / "data")
    assert cfg.deploy.keep_serving is False and cfg.runs_path() == tmp_path / "runs"
    assert cfg.train.hyperparameters["epochs"] == 1


def _table_run(tmp_path: Path, source: Path, n: int, label_column: str | None = None) -> Path:
    run_dir = tmp_path / "runs" / "20261201-120000-tabl"
    (run_dir / "steps" / "prepare").mkdir(parents=True)
    (run_dir / "steps" / "prepare" / "output.json").write_text(json.dumps(
        {"Source": "directory", "SourceLocation": str(source), "RawUri": "file:///x",
         "ImageHeight": 12, "ImageWidth": 12, "NumClasses": 3,
         "Counts": {"train": n - 12, "validation": 6, "test": 6},
         **({"LabelColumn": label_column} if label_column else {})}))
    return run_dir


@pytest.mark.parametrize("layout", ["csv-folder", "parquet-file", "parquet-digit"])
def test_a_csv_or_parquet_source_is_retrained_with_the_captures_in_its_format(tmp_path, layout):
    """A run whose data came from CSV or Parquet files: the retraining folder holds them and
    the captures in the same format, and ``prepare`` reads all of it (it reads a folder's
    IDX pairs, or else its CSV files, or else its Parquet files: never a mix)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_prepare_sources import SIDE, dataset, request, run, write_csv

    images, labels = dataset(n=60, k=3)
    label_column = "digit" if layout == "parquet-digit" else "label"
    if layout == "csv-folder":  # the seed's layout with a header row, floats 0..1
        source = tmp_path / "csv"
        write_csv(source / "digits.csv", images, labels, header=True, fmt="%.6f",
                  scale=1 / 255)
    else:  # one Parquet file, one column per pixel; its labels in "digit" (label_column)
        source = tmp_path / "digits.parquet"
        flat = images.reshape(len(images), -1)
        pq.write_table(pa.table({label_column: labels, **{f"p{i}": flat[:, i]
                                                           for i in range(SIDE * SIDE)}}),
                       source)
    run_dir = _table_run(tmp_path, source, len(labels),
                         label_column if label_column != "label" else None)
    check_dir = run_dir / "monitoring" / "20261201T123000000000Z"
    check_dir.mkdir(parents=True)
    captured = np.full((9, SIDE, SIDE), 200, np.uint8)
    joined = retrain.Joined(captured, np.array([0, 1, 2] * 3, np.uint8), 3, 0,
                            retrain.Labels({}, {}))

    dest, info = retrain.build_dataset(run_dir, check_dir, joined)
    suffix = ".csv" if layout == "csv-folder" else ".parquet"
    original = "digits" + suffix
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [original, f"captures-{check_dir.name}{suffix}"])
    assert info["source_files"] == [original] and info["captured_examples"] == 9

    more = {"LabelColumn": label_column} if label_column != "label" else {}
    out = run(request(tmp_path, str(dest), Seed=1, ValidationFraction=0.2, TestFraction=0.2,
                      **more))
    assert sum(out["Counts"].values()) == 60 + 9  # the run's data and every capture
    assert (out["ImageHeight"], out["ImageWidth"], out["NumClasses"]) == (SIDE, SIDE, 3)
    assert out["SourceLocation"] == str(dest)
