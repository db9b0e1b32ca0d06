"""MNIST ETL: the one AWS Glue 5.1 job script (Spark 3.5.6), run by Glue and by local PySpark.

Arguments (Glue ``StartJobRun.Arguments``, read with ``getResolvedOptions``)::

    --JOB_NAME       the Glue job name
    --raw_uri        where the raw splits are (s3://... in Glue, file://... locally)
    --output_uri     where the processed splits go (must not exist yet)
    --image_height   H, from the prepare step (read from the IDX files)
    --image_width    W
    --num_classes    K, labels are 0..K-1
    --rows_per_file  optional: the most rows one output part file holds (Spark's
                     maxRecordsPerFile; default: no limit, one file per write task)

Input contract (written by the ``prepare`` step)::

    <raw_uri>/<split>/*.parquet        split in train, validation, test
        label   int32                  0..K-1
        pixels  list<int32>            H*W grey values 0..255, row-major

Output contract (read by training, evaluation and inference)::

    <output_uri>/<split>/part-*.parquet  at most rows_per_file rows each
        label   int32                  0..K-1
        pixels  array<float>           H*W values in [0, 1] (grey value / 255)
    <output_uri>/_report/part-*.json   one JSON line per split with the row counts

Malformed rows are dropped and counted, each under the first reason that applies:
``dropped_null`` (label or pixels null, or a null pixel), ``dropped_wrong_size``
(len(pixels) != H*W), ``dropped_pixel_range`` (a pixel outside 0..255),
``dropped_label_range`` (label outside 0..K-1). A split left with no rows fails the job
(the counts come from the same pass as the write, so the check follows the write).

Only native Spark SQL expressions are used (no Python UDFs), so the work stays in the JVM.
"""
from __future__ import annotations

import sys
import uuid
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

SPLITS = ("train", "validation", "test")
REASONS = ("dropped_null", "dropped_wrong_size", "dropped_pixel_range", "dropped_label_range")
ARGS = ["JOB_NAME", "raw_uri", "output_uri", "image_height", "image_width", "num_classes"]
OPTIONAL_ARGS = ["rows_per_file"]  # getResolvedOptions takes only what is passed


def first_cause(e: BaseException) -> str:
    """An error's first line, and the cause at the root of a Java exception chain (the
    executor's real error: a worker that cannot read the path, ...) when it says more."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    causes = [ln.strip()[len("Caused by:"):].strip() for ln in text.splitlines()
              if ln.strip().startswith("Caused by:")]
    return f"{first} (first cause: {causes[-1]})" if causes and causes[-1] not in first \
        else first


class EtlError(Exception):
    """The job's input is unusable; the message names the location and the problem."""


def spark_uri(uri: str) -> str:
    """The URI as Spark reads it: ``s3://`` stays as is (Glue's EMRFS), a plain path
    becomes ``file://``."""
    if uri.startswith(("s3://", "s3a://", "file:/")):
        return uri.rstrip("/")
    if "://" in uri:
        raise EtlError(f"unsupported URI {uri!r}: expected s3:// or file://")
    return "file://" + uri.rstrip("/")


def split_uri(base: str, split: str) -> str:
    return f"{spark_uri(base)}/{split}"


def _reason(label: Column, pixels: Column, n_pixels: int, num_classes: int) -> Column:
    """The first reason a row is malformed, or null for a good row (native expressions only).

    array_min/array_max skip null elements; a null element is found with array_contains,
    which returns null (not false) when the value is absent and the array holds a null.
    """
    return (F.when(label.isNull() | pixels.isNull(), F.lit("dropped_null"))
            .when(F.size(pixels) != n_pixels, F.lit("dropped_wrong_size"))
            .when(F.array_contains(pixels, F.lit(-1)).isNull(), F.lit("dropped_null"))
            .when((F.array_min(pixels) < 0) | (F.array_max(pixels) > 255),
                  F.lit("dropped_pixel_range"))
            .when((label < 0) | (label >= num_classes), F.lit("dropped_label_range")))


def normalise(raw: DataFrame, image_height: int, image_width: int, num_classes: int
              ) -> tuple[DataFrame, Observation]:
    """Return (clean rows, observation of the counts).

    The counts (rows_in, rows_out, one per reason) are gathered with ``observe`` while the
    clean rows are written, so the input is read once; read them with ``observation.get``
    after the action.
    """
    missing = {"label", "pixels"} - set(raw.columns)
    if missing:
        raise EtlError(f"raw data lacks column(s) {sorted(missing)}; expected label (int) "
                       f"and pixels (array<int>), found {raw.columns}")
    n_pixels = image_height * image_width
    flagged = raw.select(F.col("label").cast("int").alias("label"),
                         F.col("pixels").cast("array<int>").alias("pixels"))
    flagged = flagged.withColumn("_reason", _reason(F.col("label"), F.col("pixels"),
                                                    n_pixels, num_classes))
    observation = Observation(f"etl_counts_{uuid.uuid4().hex[:12]}")
    metrics = [F.count(F.lit(1)).alias("rows_in"),
               F.count(F.when(F.col("_reason").isNull(), 1)).alias("rows_out")]
    metrics += [F.count(F.when(F.col("_reason") == r, 1)).alias(r) for r in REASONS]
    clean = (flagged.observe(observation, *metrics)
             .where(F.col("_reason").isNull())
             .select(F.col("label"), scale_pixels(F.col("pixels")).alias("pixels")))
    return clean, observation


def scale_pixels(pixels: Column) -> Column:
    """array<int> 0..255 -> array<float> 0..1.

    The element cast is compiled code; ``transform`` is interpreted per element (Spark 3.5
    has no code generation for higher-order functions), so its lambda is kept to a single
    float multiplication. float32(v) * float32(1/255) is within one float32 ulp of v / 255
    and is exactly 0.0 for 0 and 1.0 for 255.
    """
    inv_255 = F.lit(1.0 / 255.0).cast("float")
    return F.transform(pixels.cast("array<float>"), lambda p: p * inv_255)


def process_split(spark: SparkSession, raw_uri: str, output_uri: str, split: str,
                  image_height: int, image_width: int, num_classes: int,
                  rows_per_file: int | None = None) -> dict[str, Any]:
    """Read, validate, normalise and write one split in one pass; return its counts.

    ``rows_per_file`` caps every part file (``maxRecordsPerFile``: a write task starts a
    new file, ``-c001``, ``-c002``, ..., when one is full), so a split of any size is
    files of bounded size that training streams and SageMaker can shard by file. It adds
    no pass and no shuffle over the data."""
    source = split_uri(raw_uri, split)
    try:
        raw = spark.read.parquet(source)
    except Exception as e:  # AnalysisException: path missing or not Parquet
        raise EtlError(f"cannot read raw split '{split}' at {source}: "
                       f"{first_cause(e)}") from None
    clean, observation = normalise(raw, image_height, image_width, num_classes)
    writer = clean.write.mode("errorifexists")
    if rows_per_file is not None:
        writer = writer.option("maxRecordsPerFile", rows_per_file)
    writer.parquet(split_uri(output_uri, split))
    counts = {k: int(observation.get[k]) for k in ["rows_in", "rows_out", *REASONS]}
    if counts["rows_out"] == 0:
        raise EtlError(f"split '{split}' has no valid rows left at {source} "
                       f"(rows_in={counts['rows_in']}, "
                       + ", ".join(f"{r}={counts[r]}" for r in REASONS) + ")")
    return {"split": split, **counts}


def write_report(spark: SparkSession, output_uri: str, report: list[dict[str, Any]]) -> None:
    """One JSON line per split under ``<output_uri>/_report/`` (works on S3 and locally)."""
    (spark.createDataFrame(report).select("split", "rows_in", "rows_out", *REASONS)
     .coalesce(1).write.mode("errorifexists").json(split_uri(output_uri, "_report")))


def run(spark: SparkSession, raw_uri: str, output_uri: str, image_height: int,
        image_width: int, num_classes: int, rows_per_file: int | None = None
        ) -> list[dict[str, Any]]:
    """The whole job: every split, then the report. Returns the per-split counts."""
    if image_height <= 0 or image_width <= 0 or num_classes <= 1:
        raise EtlError(f"bad image_height/image_width/num_classes "
                       f"{image_height}/{image_width}/{num_classes}: expected positive sizes "
                       "and at least 2 classes")
    if rows_per_file is not None and rows_per_file < 1:
        raise EtlError(f"bad rows_per_file {rows_per_file}: expected an integer >= 1")
    report = []
    for split in SPLITS:
        counts = process_split(spark, raw_uri, output_uri, split, image_height, image_width,
                               num_classes, rows_per_file)
        print("etl " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
        report.append(counts)
    write_report(spark, output_uri, report)
    return report


def _glue_job(spark: SparkSession, job_name: str, args: dict[str, Any]):
    """In AWS Glue, wrap the run in a Glue Job (bookmarks, metrics); locally return None.

    Glue's JVM classes exist only inside Glue; without them the run goes on without a Job.
    """
    try:
        from py4j.java_gateway import JavaClass
        jvm_job = spark.sparkContext._jvm.com.amazonaws.services.glue.util.Job
        if not isinstance(jvm_job, JavaClass):
            return None
        from awsglue.context import GlueContext
        from awsglue.job import Job
    except ImportError:
        return None
    job = Job(GlueContext(spark.sparkContext))
    job.init(job_name, args)
    return job


def main(argv: list[str]) -> list[dict[str, Any]]:
    from awsglue.utils import getResolvedOptions

    passed = [a for a in OPTIONAL_ARGS
              if any(x == f"--{a}" or x.startswith(f"--{a}=") for x in argv)]
    args = getResolvedOptions(argv, ARGS + passed)
    spark = SparkSession.builder.getOrCreate()
    job = _glue_job(spark, args["JOB_NAME"], args)
    try:
        sizes = {k: int(args[k]) for k in ("image_height", "image_width", "num_classes",
                                           *OPTIONAL_ARGS) if k in args}
    except ValueError as e:
        raise EtlError(f"image_height/image_width/num_classes/rows_per_file must be "
                       f"integers: {e}") from None
    report = run(spark, args["raw_uri"], args["output_uri"], **sizes)
    if job is not None:
        job.commit()
    return report


if __name__ == "__main__":
    main(sys.argv)
