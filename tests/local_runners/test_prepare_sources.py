"""The prepare stage's other sources: CSV and Parquet files (local_runners/prepare_tables.py)
and s3:// prefixes read through a local ETag-validated cache (local_runners/prepare_s3.py,
on moto's in-process S3). Each bad input is a DataError naming the file, row and column."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import uris
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.errors import DataError
from harness.idx import write_idx
from harness.stages import StageContext
from local_runners.prepare import LocalPrepareRunner

SIDE = 12


def make_ctx(cfg: PipelineConfig | None = None) -> StageContext:
    announced: list[str] = []
    ctx = StageContext(run_id="t", step="prepare", config=cfg or PipelineConfig(),
                       log=logging.getLogger("test.prepare_sources"), announce=announced.append)
    ctx.announced = announced  # type: ignore[attr-defined]
    return ctx


def request(tmp_path: Path, source: str, out: str = "raw", **kw) -> dict:
    body = {"Source": source, "CacheDir": str(tmp_path / "cache"), "Mirrors": [],
            "DownloadTimeoutSeconds": 2, "Seed": 42, "ValidationFraction": 0.1,
            "TestFraction": 0.1, "OutputUri": uris.file_uri(tmp_path / out)}
    body.update(kw)
    return body


def run(req: dict, ctx: StageContext | None = None) -> dict:
    return LocalPrepareRunner().run(req, ctx or make_ctx())


def dataset(n: int = 60, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n distinct SIDE x SIDE images (uint8) and labels 0..k-1, every class present."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, SIDE, SIDE), dtype=np.uint8)
    return images, (np.arange(n) % k).astype(np.int64)


def write_csv(path: Path, images, labels, *, header: bool = False, fmt: str = "%d",
              scale: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1) * scale
    lines = ["label," + ",".join(f"{r + 1}x{c + 1}" for r in range(SIDE) for c in range(SIDE))
             ] if header else []
    lines += [f"{y}," + ",".join(fmt % v for v in row) for y, row in zip(labels, flat)]
    path.write_text("\n".join(lines) + "\n")
    return path


def written(raw: Path) -> dict[bytes, int]:
    """Every (pixels -> label) row of the three written raw splits."""
    rows: dict[bytes, int] = {}
    for split in ("train", "validation", "test"):
        table = pq.read_table(raw / split / "part-00000.parquet")
        assert table.schema.field("pixels").type == pa.list_(pa.int32())
        for y, px in zip(table.column("label").to_pylist(), table.column("pixels").to_pylist()):
            assert len(px) == SIDE * SIDE and 0 <= min(px) and max(px) <= 255
            rows[bytes(np.asarray(px, np.uint8))] = y
    return rows


def expected_rows(images, labels) -> dict[bytes, int]:
    return {bytes(img.reshape(-1)): int(y) for img, y in zip(images, labels)}


def error(req: dict) -> str:
    with pytest.raises(DataError) as e:
        run(req)
    assert not uris.local_path(req["OutputUri"]).exists()  # nothing written
    return str(e.value)


# ----------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("header", [False, True])
def test_csv_with_or_without_header(tmp_path, header):
    images, labels = dataset()
    write_csv(tmp_path / "digits" / "mnist.csv", images, labels, header=header)
    ctx = make_ctx()
    out = run(request(tmp_path, str(tmp_path / "digits")), ctx)
    assert out["Source"] == "directory" and out["SourceLocation"] == str(tmp_path / "digits")
    assert (out["ImageHeight"], out["ImageWidth"], out["NumClasses"]) == (SIDE, SIDE, 3)
    assert sum(out["Counts"].values()) == 60
    assert written(tmp_path / "raw") == expected_rows(images, labels)
    assert any(m.startswith("DATA SOURCE: CSV file in") for m in ctx.announced)


def test_a_single_csv_file_with_float_pixels_is_scaled(tmp_path, caplog):
    images, labels = dataset()
    src = write_csv(tmp_path / "mnist_train.csv", images, labels, fmt="%.6f", scale=1 / 255)
    with caplog.at_level(logging.INFO):
        run(request(tmp_path, str(src)))
    assert written(tmp_path / "raw") == expected_rows(images, labels)
    assert "floats in 0..1; scaled to 0..255" in caplog.text


def test_train_and_t10k_csv_files_keep_t10k_as_the_test_split(tmp_path):
    images, labels = dataset(90)
    write_csv(tmp_path / "d" / "train.csv", images[:60], labels[:60])
    write_csv(tmp_path / "d" / "t10k.csv", images[60:], labels[60:], header=True)
    out = run(request(tmp_path, str(tmp_path / "d")))
    assert out["Counts"]["test"] == 30


def write_csv_label_last(path: Path, images, labels) -> Path:
    """A header row naming the pixels, then ``digit`` last: the label is not first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1)
    lines = [",".join(f"p{j}" for j in range(SIDE * SIDE)) + ",digit"]
    lines += [",".join(map(str, row)) + f",{y}" for y, row in zip(labels, flat)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_header_names_the_label_column(tmp_path, caplog):
    images, labels = dataset()
    write_csv_label_last(tmp_path / "d" / "digits.csv", images, labels)
    with caplog.at_level(logging.INFO):
        out = run(request(tmp_path, str(tmp_path / "d"), LabelColumn="digit"))
    assert (out["ImageHeight"], out["NumClasses"], out["LabelColumn"]) == (SIDE, 3, "digit")
    assert written(tmp_path / "raw") == expected_rows(images, labels)
    assert "labels in column 'digit'" in caplog.text


def test_a_csv_without_the_named_label_column_is_an_error_naming_it(tmp_path):
    images, labels = dataset()
    write_csv(tmp_path / "d" / "digits.csv", images, labels, header=True)
    message = error(request(tmp_path, str(tmp_path / "d"), LabelColumn="digit"))
    assert "no label column in the header row" in message
    assert str(tmp_path / "d" / "digits.csv") in message and "'digit'" in message
    assert "[label, 1x1, 1x2" in message  # what the header holds


def test_a_bad_label_in_a_named_csv_column_names_that_column(tmp_path):
    images, labels = dataset()
    labels = labels.astype(object)
    path = write_csv_label_last(tmp_path / "d" / "digits.csv", images, labels)
    lines = path.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",-1"
    path.write_text("\n".join(lines) + "\n")
    message = error(request(tmp_path, str(tmp_path / "d"), LabelColumn="digit"))
    assert f"line 6, column {SIDE * SIDE + 1} ('digit')" in message, message


def test_a_csv_without_a_header_keeps_its_label_first_whatever_the_label_column(tmp_path):
    """The captures a retraining run adds are written without a header, label first."""
    images, labels = dataset()
    write_csv(tmp_path / "d" / "digits.csv", images, labels)
    run(request(tmp_path, str(tmp_path / "d"), LabelColumn="digit"))
    assert written(tmp_path / "raw") == expected_rows(images, labels)


def bad_csv(tmp_path: Path, edit) -> Path:
    images, labels = dataset()
    path = write_csv(tmp_path / "bad" / "digits.csv", images, labels, header=True)
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def _set(lines, line, col, value):
    cells = lines[line - 1].split(",")
    cells[col - 1] = value
    lines[line - 1] = ",".join(cells)


@pytest.mark.parametrize("edit, expect", [
    (lambda ls: ls.__setitem__(4, ls[4] + ",7"), ["line 5", "row has 146 values",
                                                  "145 values"]),
    (lambda ls: ls.__setitem__(6, ls[6].rsplit(",", 1)[0]), ["line 7", "row has 144 values"]),
    (lambda ls: _set(ls, 9, 1, "5"), ["line 9, column 1 ('label')", "label 5 out of range",
                                      "missing [3, 4]"]),
    (lambda ls: _set(ls, 3, 1, "-1"), ["line 3, column 1", "negative class label"]),
    (lambda ls: _set(ls, 11, 20, "300"), ["line 11, column 20 ('2x7')",
                                          "pixel value out of range", "300"]),
    (lambda ls: _set(ls, 8, 5, "abc"), ["line 8, column 5", "not a number", "abc"]),
    (lambda ls: _set(ls, 8, 5, ""), ["line 8, column 5 ('1x4')", "missing or non-numeric"]),
    (lambda ls: _set(ls, 2, 2, "12.5"), ["line 2, column 2", "fractional pixel value"]),
], ids=["long-row", "short-row", "label-out-of-range", "negative-label", "pixel-300",
        "text", "empty-cell", "fraction"])
def test_bad_csv_names_file_line_and_column(tmp_path, edit, expect):
    path = bad_csv(tmp_path, edit)
    msg = error(request(tmp_path, str(path.parent)))
    assert str(path) in msg
    for part in expect:
        assert part in msg, msg


def test_csv_that_is_not_square(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("".join(f"{i % 2}," + ",".join(["1"] * 50) + "\n" for i in range(20)))
    msg = error(request(tmp_path, str(path)))
    assert str(path) in msg and "50 pixel values do not make a square image" in msg
    assert "784 = 28*28" in msg


def test_labels_from_one_get_a_hint(tmp_path):
    images, labels = dataset()
    write_csv(tmp_path / "d" / "x.csv", images, labels + 1)
    msg = error(request(tmp_path, str(tmp_path / "d")))
    assert "missing [0]" in msg and "shifted to start at 0" in msg


def test_idx_pairs_win_over_csv_and_an_empty_dir_names_every_layout(tmp_path):
    images, labels = dataset()
    src = tmp_path / "both"
    write_csv(src / "other.csv", images[:30], labels[:30])
    write_idx(src / "a-images-idx3-ubyte.gz", images)
    write_idx(src / "a-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    ctx = make_ctx()
    out = run(request(tmp_path, str(src)), ctx)
    assert sum(out["Counts"].values()) == 60
    assert any("DATA SOURCE: IDX files in" in m for m in ctx.announced)

    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    msg = error(request(tmp_path, str(tmp_path / "none"), out="raw2"))
    assert "no IDX image/label pair, CSV or Parquet file" in msg and "notes.txt" in msg
    assert "*.csv files" in msg and "*.parquet files" in msg


# ----------------------------------------------------------------------------- Parquet


def test_parquet_with_a_list_column(tmp_path):
    images, labels = dataset()
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"id": np.arange(60), "label": labels,
                             "image": [img.reshape(-1).tolist() for img in images]}),
                   tmp_path / "pq" / "part-0.parquet")
    ctx = make_ctx()
    out = run(request(tmp_path, str(tmp_path / "pq")), ctx)
    assert (out["ImageHeight"], out["NumClasses"]) == (SIDE, 3)
    assert written(tmp_path / "raw") == expected_rows(images, labels)
    assert any("DATA SOURCE: Parquet file in" in m for m in ctx.announced)


def test_parquet_with_one_column_per_pixel_and_another_label_name(tmp_path):
    images, labels = dataset()
    flat = images.reshape(60, -1) / 255.0
    columns = {"digit": labels.astype(np.int32),
               **{f"pixel{j}": flat[:, j].astype(np.float32) for j in range(SIDE * SIDE)}}
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table(columns).slice(0, 30), tmp_path / "pq" / "a.parquet")
    pq.write_table(pa.table(columns).slice(30), tmp_path / "pq" / "b.parquet")
    out = run(request(tmp_path, str(tmp_path / "pq"), LabelColumn="digit"))
    assert sum(out["Counts"].values()) == 60
    assert written(tmp_path / "raw") == expected_rows(images, labels)


def test_bad_parquet_names_file_row_and_column(tmp_path):
    images, labels = dataset()
    lists = [img.reshape(-1).tolist() for img in images]
    path = tmp_path / "pq" / "d.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"y": labels, "pixels": lists}), path)
    msg = error(request(tmp_path, str(path.parent)))
    assert str(path) in msg and "no label column" in msg and "'pixels'" in msg

    lists[7] = lists[7][:-1]
    pq.write_table(pa.table({"label": labels, "pixels": lists}), path)
    msg = error(request(tmp_path, str(path.parent)))
    assert "row 8, column 'pixels'" in msg and "row has 143 pixel values" in msg

    lists[7] = [0] * 143 + [999]
    pq.write_table(pa.table({"label": labels, "pixels": lists}), path)
    msg = error(request(tmp_path, str(path.parent)))
    assert "row 8, column 'pixels' value 144" in msg and "999" in msg

    pq.write_table(pa.table({"label": labels, "image": [b"\x89PNG"] * 60}), path)
    msg = error(request(tmp_path, str(path.parent)))
    assert "field 'image'" in msg and "not a list of numbers" in msg


# ----------------------------------------------------------------------------- s3://

BUCKET = "user-data"


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 with a bucket; ``calls`` records every AWS operation made."""
    from support import moto_session

    import botocore.client

    calls: list[tuple[str, dict]] = []
    real = botocore.client.BaseClient._make_api_call

    def record(self, operation, params):
        calls.append((operation, params))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    with moto_session(monkeypatch) as session:
        client = session.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.calls = calls
        yield client


def gets(s3) -> list[str]:
    return [p["Key"] for op, p in s3.calls if op == "GetObject"]


def test_s3_idx_and_csv_prefixes_are_cached_by_etag(tmp_path, s3, caplog):
    images, labels = dataset()
    (tmp_path / "up").mkdir()
    write_idx(tmp_path / "up" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "up" / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    write_csv(tmp_path / "up" / "digits.csv", images, labels, header=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        s3.upload_file(str(tmp_path / "up" / name), BUCKET, f"mnist/idx/{name}")
    s3.upload_file(str(tmp_path / "up" / "digits.csv"), BUCKET, "mnist/csv/digits.csv")
    s3.put_object(Bucket=BUCKET, Key="mnist/csv/README", Body=b"ignored")

    for i, (prefix, what) in enumerate([("idx", "IDX files"), ("csv", "CSV file")]):
        uri = f"s3://{BUCKET}/mnist/{prefix}"
        ctx = make_ctx()
        out = run(request(tmp_path, uri, out=f"raw-{prefix}-1"), ctx)
        local = tmp_path / "cache" / "s3" / BUCKET / "mnist" / prefix
        assert out["Source"] == "s3" and out["SourceUri"] == uri
        assert out["SourceLocation"] == str(local)
        assert any(m.startswith(f"DATA SOURCE: {what} in {uri}") for m in ctx.announced)
        assert written(tmp_path / f"raw-{prefix}-1") == expected_rows(images, labels)
        assert len(gets(s3)) == (2 if prefix == "idx" else 1)
        assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == \
            sorted(p.name for p in (tmp_path / "up").iterdir() if prefix in
                   ("csv" if p.suffix == ".csv" else "idx"))
        s3.calls.clear()
        with caplog.at_level(logging.INFO):
            again = run(request(tmp_path, uri, out=f"raw-{prefix}-2"))
        assert gets(s3) == [] and "nothing downloaded" in caplog.text
        assert again["Counts"] == out["Counts"]
        assert written(tmp_path / f"raw-{prefix}-2") == expected_rows(images, labels)

    # a changed object (new ETag) is downloaded again, and only it
    new_images, new_labels = dataset(seed=1)
    write_csv(tmp_path / "up" / "digits.csv", new_images, new_labels)
    s3.upload_file(str(tmp_path / "up" / "digits.csv"), BUCKET, "mnist/csv/digits.csv")
    s3.calls.clear()
    run(request(tmp_path, f"s3://{BUCKET}/mnist/csv/", out="raw-csv-3"))
    assert gets(s3) == ["mnist/csv/digits.csv"]
    assert written(tmp_path / "raw-csv-3") == expected_rows(new_images, new_labels)

    # an object removed from the prefix leaves the cache too
    s3.upload_file(str(tmp_path / "up" / "digits.csv"), BUCKET, "mnist/idx/extra.csv")
    run(request(tmp_path, f"s3://{BUCKET}/mnist/idx", out="raw-idx-3"))
    assert (tmp_path / "cache" / "s3" / BUCKET / "mnist" / "idx" / "extra.csv").is_file()
    s3.delete_object(Bucket=BUCKET, Key="mnist/idx/extra.csv")
    run(request(tmp_path, f"s3://{BUCKET}/mnist/idx", out="raw-idx-4"))
    assert sorted(p.name for p in (tmp_path / "cache" / "s3" / BUCKET / "mnist" / "idx"
                                   ).iterdir()) == [
        ".train-images-idx3-ubyte.gz.etag", ".train-labels-idx1-ubyte.gz.etag",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_s3_single_csv_object(tmp_path, s3):
    images, labels = dataset()
    write_csv(tmp_path / "digits.csv", images, labels)
    s3.upload_file(str(tmp_path / "digits.csv"), BUCKET, "one/digits.csv")
    out = run(request(tmp_path, f"s3://{BUCKET}/one/digits.csv"))
    assert out["SourceLocation"] == str(tmp_path / "cache" / "s3" / BUCKET / "one" /
                                        "digits.csv")
    assert written(tmp_path / "raw") == expected_rows(images, labels)


def test_s3_empty_prefix_is_one_clear_error(tmp_path, s3):
    s3.put_object(Bucket=BUCKET, Key="data/sub/x.csv", Body=b"1,2")
    uri = f"s3://{BUCKET}/data"
    msg = error(request(tmp_path, uri))
    assert msg.startswith(f"{uri}: no objects under the S3 prefix")
    assert "data/sub/ (folder, not read)" in msg
    msg = error(request(tmp_path, f"s3://{BUCKET}/nothing/here.csv"))
    assert "no such S3 object" in msg
    msg = error(request(tmp_path, "s3://no-such-bucket-here/x"))
    assert "s3://no-such-bucket-here/x" in msg and "bucket does not exist" in msg


def test_s3_access_denied_and_no_credentials(tmp_path, s3, monkeypatch):
    from botocore.exceptions import ClientError

    def deny(self, operation, params):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)

    uri = f"s3://{BUCKET}/data/"
    with monkeypatch.context() as m:
        m.setattr("botocore.client.BaseClient._make_api_call", deny)
        msg = error(request(tmp_path, uri))
    assert msg.startswith(f"{uri}: access denied") and "AccessDenied" in msg

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    for k in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(k, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for k in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(k, raising=False)
    msg = error(request(tmp_path, uri))
    assert msg.startswith(f"{uri}: no AWS credentials") and "AWS_PROFILE" in msg


def test_the_local_runner_imports_boto3_only_for_an_s3_source():
    code = ("import sys, local_runners.prepare\n"
            "print('boto3' in sys.modules, 'botocore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_an_s3_source_is_not_cached_by_the_step_cache():
    """Its objects may change: the prepare runner checks them by ETag itself."""
    from harness.steps import PrepareDataStep

    step = PrepareDataStep("prepare", output_uri="file:///tmp/raw", source="s3://b/p")
    assert step.cache_inputs({"Source": "s3://bucket/prefix"}) is None
