"""``awsglue.context``: a GlueContext over the local SparkSession.

Covered: ``spark_session``, ``create_dynamic_frame.from_options`` / ``.from_catalog``,
``create_data_frame.from_options`` / ``.from_catalog``, ``write_dynamic_frame.from_options``
/ ``.from_catalog``, the ``*_from_options`` / ``*_from_catalog`` method forms,
``getSink`` (``setFormat``, ``setCatalogInfo``, ``writeFrame``) and ``get_logger``.
Connections other than ``s3`` (file paths locally) fail, naming the call.
"""
from __future__ import annotations

from typing import Any

from local_runners.glue_compat import catalog, runtime, storage
from local_runners.glue_compat.dynamicframe import DynamicFrame
from local_runners.glue_compat.unsupported import (GlueCompatError, Unsupported,
                                                   module_getattr, unsupported)

GLUE_NAME = "awsglue.context"
__all__ = ["GlueContext"]
__getattr__ = module_getattr(GLUE_NAME)


def _paths(connection_options: dict[str, Any]) -> list[str]:
    paths = connection_options.get("paths", connection_options.get("path"))
    return [paths] if isinstance(paths, str) else list(paths or [])


def _predicate(df, push_down_predicate: str):
    """Glue prunes partitions with the predicate; filtering rows gives the same rows."""
    return df.filter(push_down_predicate) if push_down_predicate else df


class GlueLogger(Unsupported):
    """``glueContext.get_logger()``: lines go to the step's log."""
    _glue_name = "GlueLogger"

    def __init__(self, rt: runtime.Runtime):
        self._log = rt.log

    def info(self, message: Any) -> None:
        self._log.info("%s", message)

    def warn(self, message: Any) -> None:
        self._log.warning("%s", message)

    warning = warn

    def error(self, message: Any) -> None:
        self._log.error("%s", message)

    def debug(self, message: Any) -> None:
        self._log.debug("%s", message)


class DynamicFrameReader(Unsupported):
    _glue_name = "GlueContext.create_dynamic_frame"

    def __init__(self, glue_context: "GlueContext"):
        self._ctx = glue_context

    def _frame(self, df, name: str = "") -> Any:
        return DynamicFrame(df, self._ctx, name)

    def from_options(self, connection_type: str, connection_options: dict | None = None,
                     format: str | None = None, format_options: dict | None = None,
                     transformation_ctx: str = "", push_down_predicate: str = "",
                     **kwargs: Any) -> Any:
        call = f"{self._glue_name}.from_options"
        storage.check_connection(connection_type, call)
        fmt = storage.check_format(format, call)
        conn = dict(connection_options or {})
        df = storage.read(self._ctx._rt, fmt, _paths(conn), format_options or {}, conn)
        return self._frame(_predicate(df, push_down_predicate), transformation_ctx)

    def from_catalog(self, database: str | None = None, table_name: str | None = None,
                     redshift_tmp_dir: str = "", transformation_ctx: str = "",
                     push_down_predicate: str = "", additional_options: dict | None = None,
                     catalog_id: str | None = None, **kwargs: Any) -> Any:
        entry = catalog.table(self._ctx._rt, kwargs.pop("name_space", database), table_name)
        fmt = storage.check_format(entry["format"], f"{self._glue_name}.from_catalog")
        df = storage.read(self._ctx._rt, fmt, [entry["location"]], entry["format_options"],
                          {})
        return self._frame(_predicate(df, push_down_predicate), transformation_ctx)


class DataFrameReader(DynamicFrameReader):
    """``glueContext.create_data_frame``: the same reads, as Spark DataFrames."""
    _glue_name = "GlueContext.create_data_frame"

    def _frame(self, df, name: str = "") -> Any:
        return df


class DynamicFrameWriter(Unsupported):
    _glue_name = "GlueContext.write_dynamic_frame"

    def __init__(self, glue_context: "GlueContext"):
        self._ctx = glue_context

    def from_options(self, frame: Any, connection_type: str,
                     connection_options: dict | None = None, format: str | None = None,
                     format_options: dict | None = None, transformation_ctx: str = "",
                     **kwargs: Any) -> Any:
        call = f"{self._glue_name}.from_options"
        storage.check_connection(connection_type, call)
        fmt = storage.check_format(format, call)
        conn = dict(connection_options or {})
        storage.write(self._ctx._rt, _to_df(frame, call), fmt, conn.get("path", ""),
                      format_options or {}, conn)
        return frame

    def from_catalog(self, frame: Any, database: str | None = None,
                     table_name: str | None = None, redshift_tmp_dir: str = "",
                     transformation_ctx: str = "", additional_options: dict | None = None,
                     catalog_id: str | None = None, **kwargs: Any) -> Any:
        call = f"{self._glue_name}.from_catalog"
        entry = catalog.table(self._ctx._rt, kwargs.pop("name_space", database), table_name)
        fmt = storage.check_format(entry["format"], call)
        storage.write(self._ctx._rt, _to_df(frame, call), fmt, entry["location"],
                      entry["format_options"], dict(additional_options or {}))
        return frame


def _to_df(frame: Any, call: str):
    from pyspark.sql import DataFrame
    if isinstance(frame, DynamicFrame):
        return frame.toDF()
    if isinstance(frame, DataFrame):
        return frame
    raise GlueCompatError(f"awsglue compat: {call} expects frame= a DynamicFrame, got "
                          f"{type(frame).__name__}")


class DataSink(Unsupported):
    """``glueContext.getSink(connection_type="s3", path=...)``."""
    _glue_name = "DataSink"

    def __init__(self, glue_context: "GlueContext", path: str, options: dict[str, Any]):
        self._ctx, self._path, self._options = glue_context, path, options
        self._format, self._format_options = None, {}

    def setFormat(self, format: str, **options: Any) -> None:
        self._format = storage.check_format(format, "DataSink.setFormat")
        self._format_options = options

    def setCatalogInfo(self, catalogDatabase: str, catalogTableName: str,
                       catalogId: str | None = None) -> None:
        """Accepted and ignored: the local catalog is not updated by writes."""
        self._ctx._rt.log.info("awsglue compat: setCatalogInfo(%s.%s) ignored locally",
                               catalogDatabase, catalogTableName)

    def writeFrame(self, dynamic_frame: Any, info: str = "") -> Any:
        if self._format is None:
            raise GlueCompatError("awsglue compat: call DataSink.setFormat(...) before "
                                  "writeFrame (Glue needs a format for an S3 sink)")
        storage.write(self._ctx._rt, _to_df(dynamic_frame, "DataSink.writeFrame"),
                      self._format, self._path, self._format_options, self._options)
        return dynamic_frame

    write = writeFrame


class GlueContext(Unsupported):
    _glue_name = "GlueContext"

    def __init__(self, sparkContext: Any = None, **options: Any):
        self._rt = runtime.current()
        self.spark_session = self._rt.spark
        self.sparkSession = self._rt.spark
        self._sc = self._rt.spark.sparkContext
        self.create_dynamic_frame = DynamicFrameReader(self)
        self.create_data_frame = DataFrameReader(self)
        self.write_dynamic_frame = DynamicFrameWriter(self)

    # method forms of the readers and writers
    def create_dynamic_frame_from_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.create_dynamic_frame.from_options(*args, **kwargs)

    def create_dynamic_frame_from_catalog(self, *args: Any, **kwargs: Any) -> Any:
        return self.create_dynamic_frame.from_catalog(*args, **kwargs)

    def create_data_frame_from_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.create_data_frame.from_options(*args, **kwargs)

    def create_data_frame_from_catalog(self, *args: Any, **kwargs: Any) -> Any:
        return self.create_data_frame.from_catalog(*args, **kwargs)

    def write_dynamic_frame_from_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.write_dynamic_frame.from_options(*args, **kwargs)

    def write_dynamic_frame_from_catalog(self, *args: Any, **kwargs: Any) -> Any:
        return self.write_dynamic_frame.from_catalog(*args, **kwargs)

    def getSink(self, connection_type: str, format: str | None = None,
                transformation_ctx: str = "", **options: Any) -> DataSink:
        storage.check_connection(connection_type, "GlueContext.getSink")
        path = options.pop("path", None)
        if not path:
            raise GlueCompatError("awsglue compat: getSink(connection_type='s3') needs "
                                  "path=")
        sink = DataSink(self, path, options)
        if format:
            sink.setFormat(format)
        return sink

    def get_logger(self) -> GlueLogger:
        return GlueLogger(self._rt)

    def currentTimeMillis(self) -> int:
        import time
        return int(time.time() * 1000)

    def getSource(self, connection_type: str, *args: Any, **kwargs: Any) -> Any:
        unsupported("GlueContext.getSource", "use create_dynamic_frame.from_options")
