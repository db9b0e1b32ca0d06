"""Reading and writing the S3 formats Glue jobs use most (csv, json, parquet, orc) with
Spark's DataFrame reader and writer, following Glue's format options.

CSV (AWS "CSV configuration reference"): ``separator`` (default ","), ``quoteChar``
(default '"', -1 turns quoting off), ``escaper``, ``multiLine``, ``withHeader`` (default
false: the columns are then named col0, col1, ... as Glue names them), ``skipFirst``,
``writeHeader`` (default true). Column types are inferred (Glue's reader infers too; a
column mixing types becomes a string, where Glue would give a choice type).

Each write goes to a temporary sibling folder that is renamed into place when the write
ends: a failed write leaves nothing. An existing output folder is refused: Glue's S3
sink would add files next to what is there (append); locally an output is written once.
"""
from __future__ import annotations

import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any

from local_runners.glue_compat.runtime import Runtime, local_path
from local_runners.glue_compat.unsupported import GlueCompatError, unsupported

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

FORMATS = ("csv", "json", "parquet", "orc")
_ALIASES = {"glueparquet": "parquet"}
# Options that change how Glue reads or groups files but not what a job computes.
_IGNORED = {"groupFiles", "groupSize", "useS3ListImplementation", "optimizePerformance",
            "compressionType", "boundedFiles", "boundedSize", "blockSize", "pageSize",
            "enableUpdateCatalog", "updateBehavior", "useGlueParquetWriter"}


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def check_format(fmt: str | None, call: str) -> str:
    name = _ALIASES.get((fmt or "").lower(), (fmt or "").lower())
    if name not in FORMATS:
        unsupported(f"{call}(format={fmt!r})",
                    f"formats covered: {', '.join(FORMATS)}")
    return name


def check_connection(connection_type: str, call: str) -> None:
    if connection_type != "s3":
        unsupported(f"{call}(connection_type={connection_type!r})",
                    "only connection_type='s3' is covered")


def _warn_unknown(rt: Runtime, options: dict[str, Any], known: set[str], what: str) -> None:
    for key in sorted(set(options) - known - _IGNORED):
        rt.log.warning("awsglue compat: %s option %r is ignored locally", what, key)


def _csv_quote(value: Any) -> str:
    return "" if str(value) == "-1" else str(value)  # Spark: "" turns quoting off


def read(rt: Runtime, fmt: str, paths: list[str], format_options: dict[str, Any],
         connection_options: dict[str, Any]) -> "DataFrame":
    """The frame of ``paths`` (files or folders) in ``fmt``."""
    if not paths:
        raise GlueCompatError("awsglue compat: connection_options needs 'paths' (a list "
                              "of files or folders) to read from")
    options = dict(format_options or {})
    locations = [rt.resolve(p) for p in paths]
    reader = rt.spark.read
    conn = dict(connection_options or {})
    if _flag(conn.get("recurse", False)):
        reader = reader.option("recursiveFileLookup", "true")
    _warn_unknown(rt, conn, {"paths", "path", "recurse"}, "connection")
    if fmt == "csv":
        _warn_unknown(rt, options, {"withHeader", "separator", "quoteChar", "escaper",
                                    "multiLine", "skipFirst", "writeHeader"}, "csv format")
        header = _flag(options.get("withHeader", False))
        skip_first = _flag(options.get("skipFirst", False)) and not header
        reader = (reader.option("header", str(header or skip_first).lower())
                  .option("inferSchema", "true")
                  .option("sep", str(options.get("separator", ",")))
                  .option("quote", _csv_quote(options.get("quoteChar", '"')))
                  .option("multiLine", str(_flag(options.get("multiLine", False))).lower()))
        if "escaper" in options:
            reader = reader.option("escape", str(options["escaper"]))
        df = reader.csv(locations)
        if not header:  # Glue's names for headerless CSV columns
            df = df.toDF(*[f"col{i}" for i in range(len(df.columns))])
        return df
    if fmt == "json":
        if options.get("jsonPath"):
            unsupported("format_options jsonPath")
        _warn_unknown(rt, options, {"multiline", "multiLine"}, "json format")
        multi = _flag(options.get("multiline", options.get("multiLine", False)))
        return reader.option("multiLine", str(multi).lower()).json(locations)
    _warn_unknown(rt, options, set(), f"{fmt} format")
    return reader.format(fmt).load(locations)


def _writer(df: "DataFrame", fmt: str, options: dict[str, Any], partition_keys: list[str]):
    writer = df.write.format(fmt)
    if partition_keys:
        writer = writer.partitionBy(*partition_keys)
    if fmt == "csv":
        writer = (writer.option("header", str(_flag(options.get("writeHeader", True))).lower())
                  .option("sep", str(options.get("separator", ",")))
                  .option("quote", _csv_quote(options.get("quoteChar", '"'))))
        if "escaper" in options:
            writer = writer.option("escape", str(options["escaper"]))
    elif fmt in ("parquet", "orc") and options.get("compression"):
        writer = writer.option("compression", str(options["compression"]))
    return writer


def write(rt: Runtime, df: "DataFrame", fmt: str, path: str, format_options: dict[str, Any],
          connection_options: dict[str, Any]) -> None:
    """Write ``df`` under ``path`` in ``fmt``, all or nothing (see the module docstring)."""
    if not path:
        raise GlueCompatError("awsglue compat: connection_options needs 'path' to write to")
    conn = dict(connection_options or {})
    _warn_unknown(rt, conn, {"path", "partitionKeys"}, "connection")
    partition_keys = list(conn.get("partitionKeys") or [])
    writer = _writer(df, fmt, dict(format_options or {}), partition_keys)
    location = rt.resolve(path)
    target = local_path(location)
    if target is None:  # a non-local file system (a resolver's): Spark refuses existing
        writer.mode("errorifexists").save(location)
        return
    if target.exists():
        raise GlueCompatError(
            f"awsglue compat: the output {path} already exists; Glue's S3 sink would add "
            "files next to what is there, locally an output folder is written once: "
            "write to a new path or remove the old output first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        writer.mode("errorifexists").save(str(tmp))
        os.replace(tmp, target)
    except KeyboardInterrupt:
        _stop_spark_then_remove(tmp)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rt.log.info("awsglue compat: wrote %s (%s)", path, fmt)


def _stop_spark_then_remove(tmp) -> None:
    """On Ctrl-C no task may still write into the temporary folder when it is removed."""
    from local_runners.spark_session import stop_spark
    try:
        stop_spark()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
