"""The prepare stage: sources (fixture, directory, cache, download, offline fallback),
deterministic stratified splits, the raw Parquet contract, and errors for bad input."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import logging
import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import uris
from harness.config import PipelineConfig
from harness.errors import DataError
from harness.idx import write_idx
from harness.stages import StageContext
from local_runners.prepare import MIN_IMAGE_SIDE, MNIST_MD5, LocalPrepareRunner


def make_ctx() -> StageContext:
    """A StageContext whose ``announced`` list records the loud messages."""
    announced: list[str] = []
    ctx = StageContext(run_id="t", step="prepare", config=PipelineConfig(),
                       log=logging.getLogger("test.prepare"), announce=announced.append)
    ctx.announced = announced  # type: ignore[attr-defined]
    return ctx


def request(tmp_path: Path, source: str, **kw) -> dict:
    body = {"Source": source, "CacheDir": str(tmp_path / "cache"), "Mirrors": [],
            "DownloadTimeoutSeconds": 2, "Seed": 42, "ValidationFraction": 0.1,
            "TestFraction": 0.1, "OutputUri": uris.file_uri(tmp_path / "raw")}
    body.update(kw)
    return body


def run(req: dict, ctx: StageContext | None = None) -> dict:
    return LocalPrepareRunner().run(req, ctx or make_ctx())


def write_pair(directory: Path, prefix: str, n: int, *, h: int = 12, w: int = 10, k: int = 3,
               fill: int | None = None, gz: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """Write a small images/labels IDX pair; every class 0..k-1 occurs."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    if fill is not None:
        images[:] = fill
    labels = (np.arange(n) % k).astype(np.uint8)
    ext = ".gz" if gz else ""
    ip = directory / f"{prefix}-images-idx3-ubyte{ext}"
    lp = directory / f"{prefix}-labels-idx1-ubyte{ext}"
    write_idx(ip, images)
    write_idx(lp, labels)
    return ip, lp


def read_split(raw: Path, split: str) -> pa.Table:
    return pq.read_table(raw / split / "part-00000.parquet")


# ----------------------------------------------------------------------------- fixture


def test_fixture_source_gives_stratified_5000_digits(tmp_path):
    ctx = make_ctx()
    out = run(request(tmp_path, "fixture"), ctx)
    assert out["Source"] == "fixture"
    assert out["Counts"] == {"train": 4000, "validation": 500, "test": 500}
    assert (out["ImageHeight"], out["ImageWidth"], out["NumClasses"]) == (28, 28, 10)
    assert out["RawUri"] == uris.file_uri(tmp_path / "raw") and out["Seed"] == 42
    assert any("DATA SOURCE" in m and "5,000 digits" in m for m in ctx.announced)

    raw = tmp_path / "raw"
    for split, n in out["Counts"].items():
        table = read_split(raw, split)
        assert table.schema.field("label").type == pa.int32()
        assert table.schema.field("pixels").type == pa.list_(pa.int32())
        assert table.num_rows == n
        labels = table.column("label").to_numpy()
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10  # stratified
        pixels = np.stack(table.column("pixels").to_numpy(zero_copy_only=False))
        assert pixels.shape == (n, 784) and pixels.min() >= 0 and pixels.max() <= 255
    # no leftovers next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    def labels(sub: str, seed: int) -> np.ndarray:
        run(request(tmp_path, "fixture", Seed=seed, OutputUri=uris.file_uri(tmp_path / sub)))
        return read_split(tmp_path / sub, "validation").column("pixels").to_numpy(
            zero_copy_only=False)

    a, b, c = labels("a", 7), labels("b", 7), labels("c", 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_refuses_existing_output(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match="already exists"):
        run(request(tmp_path, "fixture"))


# ----------------------------------------------------------------------------- directory


def test_directory_with_train_and_t10k_keeps_t10k_as_test(tmp_path):
    src = tmp_path / "idx"
    write_pair(src, "train", 60, fill=10, gz=False)
    write_pair(src, "t10k", 12, fill=200)
    out = run(request(tmp_path, uris.file_uri(src)))
    assert out["Source"] == "directory" and out["SourceLocation"] == str(src)
    assert out["Counts"] == {"train": 54, "validation": 6, "test": 12}
    assert (out["ImageHeight"], out["ImageWidth"], out["NumClasses"]) == (12, 10, 3)
    test_pixels = np.concatenate(read_split(tmp_path / "raw", "test")
                                 .column("pixels").to_numpy(zero_copy_only=False))
    train_pixels = np.concatenate(read_split(tmp_path / "raw", "train")
                                  .column("pixels").to_numpy(zero_copy_only=False))
    assert set(test_pixels.tolist()) == {200} and set(train_pixels.tolist()) == {10}


def test_directory_without_t10k_pools_and_splits_three_ways(tmp_path):
    src = tmp_path / "idx"
    write_pair(src, "digits-a", 50, k=5)
    write_pair(src, "digits-b", 50, k=5, seed=1)
    out = run(request(tmp_path, str(src), ValidationFraction=0.2, TestFraction=0.2))
    assert out["Counts"] == {"train": 60, "validation": 20, "test": 20}
    assert out["NumClasses"] == 5


# ----------------------------------------------------------------------------- download


@contextlib.contextmanager
def serve(directory: Path):
    """A static HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def mirror_dir(tmp_path) -> tuple[Path, dict[str, str]]:
    """Small files under the four canonical MNIST names, and their MD5 sums."""
    d = tmp_path / "mirror"
    write_pair(d, "train", 40, k=4)
    write_pair(d, "t10k", 8, k=4, seed=3)
    sums = {name: hashlib.md5((d / name).read_bytes()).hexdigest() for name in MNIST_MD5}
    return d, sums


def test_download_then_cache_reuse(tmp_path, mirror_dir):
    d, sums = mirror_dir
    with serve(d) as url:
        ctx = make_ctx()
        out = run(request(tmp_path, "download", Mirrors=[closed_port_url(), url],
                          Checksums=sums), ctx)
    assert out["Source"] == "download"
    assert out["Counts"] == {"train": 36, "validation": 4, "test": 8}
    assert any("downloaded from " + url in m for m in ctx.announced)
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(MNIST_MD5)  # no partial files
    # the server is gone: the second run must come from the cache
    again = run(request(tmp_path, "auto", Mirrors=[url], Checksums=sums,
                        OutputUri=uris.file_uri(tmp_path / "raw2")))
    assert again["Source"] == "cache" and again["Counts"] == out["Counts"]


def test_download_checksum_mismatch(tmp_path, mirror_dir):
    d, sums = mirror_dir
    bad = {**sums, "train-labels-idx1-ubyte.gz": "0" * 32}
    with serve(d) as url, pytest.raises(DataError) as e:
        run(request(tmp_path, "download", Mirrors=[url], Checksums=bad))
    msg = str(e.value)
    assert url + "train-labels-idx1-ubyte.gz" in msg and "MD5" in msg and "0" * 32 in msg
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_download_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as e:
        run(request(tmp_path, "download", Mirrors=[closed_port_url()]))
    assert "cannot download MNIST" in str(e.value) and "train-images-idx3-ubyte.gz" in str(e.value)
    assert not (tmp_path / "raw").exists()


def test_auto_offline_falls_back_to_fixture_loudly(tmp_path):
    ctx = make_ctx()
    out = run(request(tmp_path, "auto", Mirrors=[closed_port_url()]), ctx)
    assert out["Source"] == "fixture" and out["Counts"]["train"] == 4000
    assert any("DATA SOURCE" in m and "offline fallback" in m for m in ctx.announced)


# ----------------------------------------------------------------------------- bad input


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-7])


def _corrupt_gz(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _bad_magic(p: Path) -> None:
    p.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 40)


@pytest.mark.parametrize("case, target, expect", [
    ("truncated", "train-images-idx3-ubyte", "truncated"),
    ("corrupt", "train-labels-idx1-ubyte.gz", "gzip"),
    ("magic", "train-labels-idx1-ubyte.gz", "wrong magic number"),
    ("count", "train-labels-idx1-ubyte.gz", "count mismatch"),
    ("range", "train-labels-idx1-ubyte.gz", "labels out of range"),
    ("empty", "train-images-idx3-ubyte", "empty dataset"),
    ("no-labels", "train-images-idx3-ubyte", "no labels file"),
])
def test_bad_files_name_the_file_and_leave_nothing(tmp_path, case, target, expect):
    src = tmp_path / "idx"
    ip, lp = write_pair(src, "train", 30, gz=False)
    lp.unlink()
    lp = src / "train-labels-idx1-ubyte.gz"
    write_idx(lp, (np.arange(30) % 3).astype(np.uint8))
    if case == "truncated":
        _truncate(ip)
    elif case == "corrupt":
        _corrupt_gz(lp)
    elif case == "magic":
        _bad_magic(lp)
    elif case == "count":
        write_idx(lp, np.zeros(29, dtype=np.uint8))
    elif case == "range":
        write_idx(lp, np.array([0, 1, 4] * 10, dtype=np.uint8))  # classes 2 and 3 missing
    elif case == "empty":
        write_idx(ip, np.zeros((0, 12, 10), dtype=np.uint8))
        write_idx(lp, np.zeros(0, dtype=np.uint8))
    elif case == "no-labels":
        lp.unlink()
    with pytest.raises(DataError) as e:
        run(request(tmp_path, str(src)))
    msg = str(e.value)
    assert target in msg and expect in msg
    if case == "range":
        assert "[0, 1, 4]" in msg and "missing [2, 3]" in msg
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary leftovers


def test_image_sizes_must_agree(tmp_path):
    src = tmp_path / "idx"
    write_pair(src, "a", 10, h=12)
    write_pair(src, "b", 10, h=13)
    with pytest.raises(DataError, match="image size differs") as e:
        run(request(tmp_path, str(src)))
    assert "b-images-idx3-ubyte.gz" in str(e.value) and "12x10" in str(e.value)


def test_missing_directory(tmp_path):
    with pytest.raises(DataError) as e:
        run(request(tmp_path, str(tmp_path / "nowhere")))
    assert "nowhere" in str(e.value) and "not found" in str(e.value)
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    assert not (tmp_path / "raw").exists()


def test_directory_without_idx_pairs(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        run(request(tmp_path, str(tmp_path / "idx")))
    assert "no IDX image/label pair" in str(e.value) and "readme.txt" in str(e.value)


def test_unreadable_directory(tmp_path, monkeypatch):
    src = tmp_path / "idx"
    write_pair(src, "train", 30)
    src.chmod(0)
    try:
        if _can_list(src):
            # root reads any directory (CI runs as root): make listing it fail as it
            # does for everybody else.
            real_listdir = os.listdir

            def listdir(path="."):
                if Path(path) == src:
                    raise PermissionError(13, "Permission denied", str(path))
                return real_listdir(path)

            monkeypatch.setattr(os, "listdir", listdir)
        with pytest.raises(DataError, match="cannot read the data directory") as e:
            run(request(tmp_path, str(src)))
        assert str(src) in str(e.value) and "Permission denied" in str(e.value)
        assert not (tmp_path / "raw").exists()
    finally:
        src.chmod(0o755)


def _can_list(path: Path) -> bool:
    try:
        list(path.iterdir())
        return True
    except OSError:
        return False


def test_source_that_is_a_file(tmp_path):
    ip, _ = write_pair(tmp_path / "idx", "train", 30)
    with pytest.raises(DataError, match="not a directory") as e:
        run(request(tmp_path, str(ip)))
    assert str(ip) in str(e.value)


# ----------------------------------------------------------------------------- hostile data dirs
# Each names the file at fault and the expected value, and leaves no output behind.


def _hostile_error(tmp_path, src: Path) -> str:
    with pytest.raises(DataError) as e:
        run(request(tmp_path, str(src)))
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    msg = str(e.value)
    assert "Expected" in msg
    return msg


def test_hostile_empty_directory(tmp_path):
    (tmp_path / "idx").mkdir()
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(tmp_path / "idx") in msg and "no IDX image/label pair" in msg
    assert "Got []" in msg


def test_hostile_more_labels_than_images(tmp_path):
    ip, lp = write_pair(tmp_path / "idx", "train", 30)
    write_idx(lp, (np.arange(31) % 3).astype(np.uint8))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(ip) in msg and str(lp) in msg and "count mismatch" in msg
    assert "as many labels as images (30)" in msg and "31 labels" in msg


def test_hostile_label_255(tmp_path):
    _, lp = write_pair(tmp_path / "idx", "train", 30, k=10)
    write_idx(lp, np.r_[np.arange(29) % 10, 255].astype(np.uint8))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(lp) in msg and "labels out of range" in msg and "K = max label + 1 = 256" in msg
    assert "missing [10, 11, 12, 13, 14, 15, ..., 249, 250, 251, 252, 253, 254] (245 values)" \
        in msg


def test_hostile_label_near_2_to_the_31(tmp_path):
    # K = 2**31 classes: listing the missing ones must not build range(K) (it ran out of
    # memory: the process was killed)
    _, lp = write_pair(tmp_path / "idx", "train", 30, k=10)
    write_idx(lp, np.r_[np.arange(29) % 10, 2**31 - 1].astype(np.int32))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(lp) in msg and f"K = max label + 1 = {2**31}" in msg
    assert f"missing [10, 11, 12, 13, 14, 15, ..., " in msg
    assert f"{2**31 - 3}, {2**31 - 2}] ({2**31 - 11} values)" in msg


def test_hostile_negative_label(tmp_path):
    _, lp = write_pair(tmp_path / "idx", "train", 30)
    write_idx(lp, np.r_[np.arange(29) % 3, -1].astype(np.int8))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(lp) in msg and "negative class label" in msg and "[-1, 0, 1, 2]" in msg


@pytest.mark.parametrize("h, w", [(1, 1), (9, 28), (28, 9)])
def test_hostile_images_too_small_for_the_network(tmp_path, h, w):
    ip, _ = write_pair(tmp_path / "idx", "train", 30, h=h, w=w)
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(ip) in msg and "too small" in msg and "rows x columns" in msg
    assert "at least 10x10 pixels" in msg and f"{h}x{w}" in msg


@pytest.mark.parametrize("label", [0, 7])
def test_hostile_single_class(tmp_path, label):
    _, lp = write_pair(tmp_path / "idx", "train", 30)
    write_idx(lp, np.full(30, label, dtype=np.uint8))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(lp) in msg and f"a single class ({label})" in msg and "K >= 2" in msg


def test_hostile_zero_image_rows_in_the_header(tmp_path):
    ip, _ = write_pair(tmp_path / "idx", "train", 30, gz=False)
    ip.write_bytes(ip.read_bytes()[:4] + struct.pack(">3I", 30, 0, 10))
    msg = _hostile_error(tmp_path, tmp_path / "idx")
    assert str(ip) in msg and "dimension 2 of the header" in msg


@pytest.mark.slow
def test_min_image_side_is_the_networks():
    """MIN_IMAGE_SIDE is what model/network.py accepts: 10 builds, 9 does not."""
    from model.network import build_classifier
    build_classifier(MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3)
    for h, w in ((MIN_IMAGE_SIDE - 1, MIN_IMAGE_SIDE), (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE - 1)):
        with pytest.raises(ValueError):
            build_classifier(h, w, 3)


# ------------------------------------------------------------- a test split worth gating


def test_a_test_split_too_small_for_the_gate_stops_before_anything_is_written(tmp_path):
    # 60 digits of 3 classes: the test split holds 2 of each, and the gate would pass or
    # fail on a handful of images
    write_pair(tmp_path / "data", "tiny", 60)
    with pytest.raises(DataError) as e:
        run(request(tmp_path, str(tmp_path / "data"), MinTestPerClass=10))
    msg = str(e.value)
    assert "tiny-images-idx3-ubyte.gz" in msg and "data.min_test_per_class" in msg
    assert "2 example(s) of class" in msg and "at least 10" in msg
    assert not (tmp_path / "raw").exists()


def test_the_minimum_per_class_is_configurable_and_zero_turns_it_off(tmp_path):
    write_pair(tmp_path / "data", "tiny", 60)
    assert run(request(tmp_path, str(tmp_path / "data"), MinTestPerClass=2))["Counts"][
        "test"] == 6
    out = run(request(tmp_path / "b", str(tmp_path / "data"), MinTestPerClass=0))
    assert out["Counts"]["test"] == 6


def test_the_default_pipeline_asks_for_ten_test_examples_per_class():
    from pipeline_support import pipeline, request as step_request, run_document

    cfg, wf = pipeline()
    assert cfg.data.min_test_per_class == 10
    body = step_request(wf, "prepare", run_document("file:///tmp/x"))
    assert body["MinTestPerClass"] == 10


def test_data_label_column_reaches_the_prepare_request_only_when_set():
    from pipeline_support import pipeline, request as step_request, run_document

    _, wf = pipeline()
    assert "LabelColumn" not in step_request(wf, "prepare", run_document("file:///tmp/x"))
    cfg, wf = pipeline(**{"data.label_column": "digit"})
    assert step_request(wf, "prepare", run_document("file:///tmp/x"))["LabelColumn"] == "digit"
