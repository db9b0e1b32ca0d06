"""ETL benchmark: the Glue script's Spark path vs numpy+pyarrow on the same raw Parquet.

Both sides do the same work on the same file: read the raw split, drop malformed rows
(null, wrong size, pixel outside 0..255, label outside 0..K-1), divide the pixels by 255
into float32 and write Parquet (snappy). Spark runs on a warm local session (the session
start-up is paid once per pipeline, not per split). Each side runs ``repeats`` times; the
best time counts, which damps noise from other processes on a small machine.

    python -m bench.etl_bench [--rows 70000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness import uris
from harness.config import PipelineConfig
from harness.idx import read_image_label_pair
from local_runners.prepare import FIXTURE_DIR, ROW_GROUP_ROWS, raw_table

H = W = 28
K = 10


def make_raw(directory: Path, n_rows: int) -> Path:
    """``n_rows`` MNIST-sized rows (the bundled digits, tiled) as a raw ``train`` split."""
    images, labels = read_image_label_pair(FIXTURE_DIR / "train-images-idx3-ubyte.gz",
                                           FIXTURE_DIR / "train-labels-idx1-ubyte.gz")
    reps = -(-n_rows // len(labels))
    images = np.tile(images, (reps, 1, 1))[:n_rows]
    labels = np.tile(labels, reps)[:n_rows]
    split = directory / "train"
    split.mkdir(parents=True)
    pq.write_table(raw_table(images, labels), split / "part-00000.parquet",
                   row_group_size=ROW_GROUP_ROWS, compression="snappy")
    return directory


def numpy_etl(raw_split: Path, out_file: Path, h: int = H, w: int = W, k: int = K) -> int:
    """The same normalisation with numpy+pyarrow; returns the rows written."""
    table = pq.read_table(raw_split)
    labels = table.column("label").combine_chunks()
    pixels = table.column("pixels").combine_chunks()
    n = h * w
    lengths = pc.fill_null(pc.list_value_length(pixels), -1).to_numpy()
    lab = pc.fill_null(labels, -1).to_numpy()
    ok = (lengths == n) & (lab >= 0) & (lab < k)          # null label/pixels, size, label
    values = pc.fill_null(pixels.values, -1).to_numpy()  # a null pixel fails the range check
    starts = pixels.offsets.to_numpy()[:-1]
    if ok.all() and starts[0] == 0 and len(values) == len(ok) * n:
        block = values.reshape(-1, n)                      # fast path: no copy
    else:
        block = values[starts[ok][:, None] + np.arange(n)]
        lab = lab[ok]
    keep = (block.min(axis=1) >= 0) & (block.max(axis=1) <= 255)
    out = (block[keep] / np.float32(255)).astype(np.float32)
    offsets = pa.array(np.arange(0, out.size + 1, n, dtype=np.int32))
    result = pa.table({"label": pa.array(lab[keep].astype(np.int32)),
                       "pixels": pa.ListArray.from_arrays(offsets, pa.array(out.reshape(-1)))})
    pq.write_table(result, out_file, compression="snappy")
    return result.num_rows


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_etl(n_rows: int = 70000, cfg: PipelineConfig | None = None, repeats: int = 3
              ) -> dict:
    from glue_etl.mnist_etl import process_split
    from local_runners.spark_session import get_spark

    cfg = cfg or PipelineConfig()
    spark = get_spark(cfg)
    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        tmp_path = Path(tmp)
        raw = make_raw(tmp_path / "raw", n_rows)
        raw_uri = uris.file_uri(raw)
        out = tmp_path / "out"

        def spark_once() -> dict:
            shutil.rmtree(out, ignore_errors=True)
            return process_split(spark, raw_uri, uris.file_uri(out), "train", H, W, K)

        def numpy_once() -> int:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return numpy_etl(raw / "train", out / "part-00000.parquet")

        counts = spark_once()  # warm-up: JIT, class loading, file system caches
        rows = numpy_once()
        if counts["rows_out"] != n_rows or rows != n_rows:
            raise RuntimeError(f"bench rows differ: spark {counts}, numpy {rows}")
        spark_s = _best(spark_once, repeats)
        numpy_s = _best(numpy_once, repeats)
    return {"rows": n_rows, "spark_s": round(spark_s, 3), "numpy_s": round(numpy_s, 3),
            "ratio": round(spark_s / numpy_s, 3), "goal_ratio": 1.5,
            "ok": spark_s / numpy_s <= 1.5, "spark_master": cfg.etl.spark_master,
            "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description="ETL: Spark vs numpy+pyarrow")
    parser.add_argument("--rows", type=int, default=70000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(bench_etl(args.rows, repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()
