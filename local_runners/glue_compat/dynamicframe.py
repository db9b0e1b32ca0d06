"""``awsglue.dynamicframe`` over a Spark DataFrame.

A DynamicFrame here wraps a DataFrame: its schema is the DataFrame's, so there are no
choice types (a CSV column mixing types is a string). Records passed to ``filter`` and
``map`` functions are plain dicts (nested structs as dicts), as Glue's DynamicRecord
behaves for ``rec["field"]``, assignment and ``del``. An exception in such a function
fails the job (Glue would count an error record instead).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from local_runners.glue_compat import runtime
from local_runners.glue_compat.unsupported import (GlueCompatError, Unsupported,
                                                   module_getattr, unsupported)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

GLUE_NAME = "awsglue.dynamicframe"
__all__ = ["DynamicFrame", "DynamicFrameCollection"]
__getattr__ = module_getattr(GLUE_NAME)

# Glue type names (apply_mapping, ResolveChoice) -> Spark SQL types.
_TYPES = {"string": "string", "int": "int", "integer": "int", "long": "bigint",
          "bigint": "bigint", "short": "smallint", "smallint": "smallint", "byte": "tinyint",
          "tinyint": "tinyint", "double": "double", "float": "float", "boolean": "boolean",
          "bool": "boolean", "timestamp": "timestamp", "date": "date", "binary": "binary",
          "decimal": "decimal(10,2)", "null": "void"}


def spark_type(glue_type: str, call: str) -> str:
    name = str(glue_type).strip().lower()
    if name.startswith("decimal("):
        return name
    if name not in _TYPES:
        unsupported(f"{call} type {glue_type!r}",
                    f"types covered: {', '.join(sorted(_TYPES))}, decimal(p,s)")
    return _TYPES[name]


def column(path: str):
    """The Spark column of a Glue field path: dots reach into structs, backticks quote a
    name with dots (Glue's convention)."""
    from pyspark.sql import functions as F
    if path.startswith("`") and path.endswith("`"):
        return F.col(path)
    return F.col(".".join(f"`{part}`" for part in path.split(".")))


def _glue_type(dt) -> str:
    name = dt.typeName()
    return {"integer": "int", "void": "null"}.get(name, name)


def _tree(dt, depth: int, out: list[str]) -> None:
    from pyspark.sql.types import ArrayType, MapType, StructType
    pad = "|    " * depth
    if isinstance(dt, StructType):
        for f in dt.fields:
            out.append(f"{pad}|-- {f.name}: {_glue_type(f.dataType)}")
            _tree(f.dataType, depth + 1, out)
    elif isinstance(dt, ArrayType):
        out.append(f"{pad}|-- element: {_glue_type(dt.elementType)}")
        _tree(dt.elementType, depth + 1, out)
    elif isinstance(dt, MapType):
        out.append(f"{pad}|-- keyType: {_glue_type(dt.keyType)}")
        out.append(f"{pad}|-- valueType: {_glue_type(dt.valueType)}")
        _tree(dt.valueType, depth + 1, out)


def schema_string(df: "DataFrame") -> str:
    """The schema the way Glue's ``printSchema`` prints it (``|-- name: type``)."""
    lines = ["root"]
    _tree(df.schema, 0, lines)
    return "\n".join(lines) + "\n"


def _record_schema(sample: list[dict], keys: list[str], before):
    """The schema of ``map``'s output: inferred from a sample of its records; a field
    whose values are all null keeps its input type (string when new)."""
    from pyspark.sql.types import (DoubleType, FloatType, IntegerType, LongType, NullType,
                                   StringType, StructField, StructType, _infer_type,
                                   _merge_type)
    from pyspark.sql.types import NumericType
    fields = []
    for key in keys:
        inferred = NullType()
        for rec in sample:
            if rec.get(key) is not None:
                this = _infer_type(rec[key])
                try:
                    inferred = _merge_type(inferred, this)
                except (TypeError, ValueError):
                    if isinstance(inferred, NumericType) and isinstance(this, NumericType):
                        inferred = DoubleType()  # ints and floats: a double field
                    else:
                        raise GlueCompatError(
                            f"awsglue compat: map returned values of different types for "
                            f"field {key!r} ({inferred.simpleString()} and "
                            f"{this.simpleString()}); Glue would make a choice type, which "
                            "the local layer does not have") from None
        old = before[key].dataType if key in before.names else None
        if isinstance(inferred, NullType):
            inferred = old or StringType()
        elif (isinstance(inferred, LongType) and isinstance(old, IntegerType)) or \
                (isinstance(inferred, DoubleType) and isinstance(old, FloatType)):
            inferred = old  # Python int/float values of an int/float field stay as they were
        fields.append(StructField(key, inferred, True))
    return StructType(fields)


class DynamicFrame(Unsupported):
    _glue_name = "DynamicFrame"

    def __init__(self, df: "DataFrame", glue_ctx: Any = None, name: str = ""):
        from pyspark.sql import DataFrame
        if not isinstance(df, DataFrame):
            unsupported("DynamicFrame(jdf, ...)", "build one with DynamicFrame.fromDF(df, "
                        "glue_ctx, name)")
        self._df, self.glue_ctx, self.name = df, glue_ctx, name

    @staticmethod
    def fromDF(dataframe: "DataFrame", glue_ctx: Any, name: str) -> "DynamicFrame":
        return DynamicFrame(dataframe, glue_ctx, name)

    def _new(self, df: "DataFrame") -> "DynamicFrame":
        return DynamicFrame(df, self.glue_ctx, self.name)

    def toDF(self, options: Any = None) -> "DataFrame":
        if options:
            unsupported("DynamicFrame.toDF(options=...)")
        return self._df

    # -- information --
    def count(self) -> int:
        return self._df.count()

    def schema(self):
        """The frame's schema (a Spark StructType, where Glue returns its own type)."""
        return self._df.schema

    def printSchema(self) -> None:
        print(schema_string(self._df), end="")

    def show(self, num_rows: int = 20) -> None:
        """The first ``num_rows`` records, one JSON object a line, as Glue prints them."""
        for row in self._df.limit(num_rows).collect():
            print(json.dumps(row.asDict(recursive=True), default=str))

    def getNumPartitions(self) -> int:
        return self._df.rdd.getNumPartitions()

    # -- fields --
    def apply_mapping(self, mappings, case_sensitive: bool = False,
                      transformation_ctx: str = "", info: str = "", stageThreshold: int = 0,
                      totalThreshold: int = 0) -> "DynamicFrame":
        """Keep only the mapped fields: each (source, source type, target, target type)
        reads ``source``, casts it to ``target type`` and names it ``target``. A source the
        frame does not have yields no field (Glue's records simply lack it); a warning
        names it."""
        rt = runtime.current()
        present = _field_paths(self._df.schema)
        cols = []
        for m in mappings:
            if not isinstance(m, (tuple, list)) or len(m) != 4:
                raise GlueCompatError(f"awsglue compat: apply_mapping expects (source, "
                                      f"source_type, target, target_type) tuples, got {m!r}")
            source, _, target, target_type = (str(x) for x in m)
            if "." in target.strip("`") and not (target.startswith("`") and target.endswith("`")):
                unsupported(f"apply_mapping to a nested target {target!r}")
            if source.strip("`").lower() not in present:
                rt.log.warning("awsglue compat: apply_mapping: the frame has no field %r; "
                               "%r is left out", source, target)
                continue
            cols.append(column(source).cast(spark_type(target_type, "apply_mapping"))
                        .alias(target.strip("`")))
        return self._new(self._df.select(*cols))

    applyMapping = apply_mapping

    def drop_fields(self, paths, transformation_ctx: str = "", info: str = "",
                    stageThreshold: int = 0, totalThreshold: int = 0) -> "DynamicFrame":
        top = [p for p in _as_list(paths)]
        for p in top:
            if "." in p.strip("`") and not p.startswith("`"):
                unsupported(f"drop_fields of a nested field {p!r}")
        return self._new(self._df.drop(*[p.strip("`") for p in top]))

    def select_fields(self, paths, transformation_ctx: str = "", info: str = "",
                      stageThreshold: int = 0, totalThreshold: int = 0) -> "DynamicFrame":
        """Only the named fields (those the frame has; Glue skips missing ones)."""
        present = _field_paths(self._df.schema)
        wanted = [p for p in _as_list(paths) if p.strip("`").lower() in present]
        return self._new(self._df.select(*[column(p).alias(p.strip("`").split(".")[-1])
                                           for p in wanted]))

    def rename_field(self, oldName: str, newName: str, transformation_ctx: str = "",
                     info: str = "", stageThreshold: int = 0, totalThreshold: int = 0
                     ) -> "DynamicFrame":
        if "." in oldName.strip("`") and not oldName.startswith("`"):
            unsupported(f"rename_field of a nested field {oldName!r}")
        return self._new(self._df.withColumnRenamed(oldName.strip("`"), newName.strip("`")))

    def resolveChoice(self, specs=None, choice: str = "", database=None, table_name=None,
                      transformation_ctx: str = "", info: str = "", stageThreshold: int = 0,
                      totalThreshold: int = 0, catalog_id=None) -> "DynamicFrame":
        """``cast:<type>`` and ``project:<type>`` specs cast the field (frames here have no
        choice types, so both give the field that type). ``choice=`` alone is a no-op for
        the same reason, except ``match_catalog``, which fails."""
        if specs is None and not choice:
            raise GlueCompatError("Parameter specs and option are both missing, add one.")
        if specs is not None and choice:
            raise GlueCompatError("Parameter specs and option are both specified, choose one.")
        if choice:
            if str(choice).lower() == "match_catalog":
                unsupported("ResolveChoice choice='match_catalog'")
            return self._new(self._df)
        df = self._df
        for path, action in ([specs] if isinstance(specs, tuple) else list(specs)):
            kind, _, type_name = str(action).partition(":")
            if kind not in ("cast", "project") or not type_name:
                unsupported(f"ResolveChoice spec {action!r}",
                            "specs covered: cast:<type>, project:<type>")
            if "." in path.strip("`") and not path.startswith("`"):
                unsupported(f"ResolveChoice of a nested field {path!r}")
            name = path.strip("`")
            if name in df.columns:
                df = df.withColumn(name, column(path).cast(spark_type(type_name,
                                                                      "ResolveChoice")))
        return self._new(df)

    # -- records --
    def filter(self, f: Callable[[dict], bool], transformation_ctx: str = "", info: str = "",
               stageThreshold: int = 0, totalThreshold: int = 0) -> "DynamicFrame":
        """The records for which ``f(record)`` is true; ``record`` is a dict."""
        kept = self._df.rdd.filter(lambda row: bool(f(row.asDict(recursive=True))))
        return self._new(self._df.sparkSession.createDataFrame(kept, self._df.schema))

    def map(self, f: Callable[[dict], dict], transformation_ctx: str = "", info: str = "",
            stageThreshold: int = 0, totalThreshold: int = 0) -> "DynamicFrame":
        """``f(record)`` for every record (a dict in, a dict out). The output schema is
        inferred from the first 100 records' values (field order: first seen)."""
        def apply(row):
            out = f(row.asDict(recursive=True))
            if not isinstance(out, dict):
                raise TypeError(f"the map function must return a dict, got {type(out).__name__}")
            return out
        mapped = self._df.rdd.map(apply)
        sample = mapped.take(100)
        if not sample:
            return self._new(self._df)
        keys: list[str] = []
        for rec in sample:
            keys += [k for k in rec if k not in keys]
        schema = _record_schema(sample, keys, self._df.schema)
        floats = {k for k in keys if schema[k].dataType.typeName() in ("double", "float")}
        rows = mapped.map(lambda rec: tuple(
            float(rec[k]) if k in floats and isinstance(rec.get(k), int) else rec.get(k)
            for k in keys))
        return self._new(self._df.sparkSession.createDataFrame(rows, schema))

    # -- partitions --
    def repartition(self, num_partitions: int, transformation_ctx: str = "", info: str = "",
                    stageThreshold: int = 0, totalThreshold: int = 0) -> "DynamicFrame":
        return self._new(self._df.repartition(num_partitions))

    def coalesce(self, num_partitions: int, shuffle: bool = False,
                 transformation_ctx: str = "", info: str = "", stageThreshold: int = 0,
                 totalThreshold: int = 0) -> "DynamicFrame":
        df = self._df.repartition(num_partitions) if shuffle else self._df.coalesce(
            num_partitions)
        return self._new(df)


class DynamicFrameCollection(Unsupported):
    """Returned by no covered call; present so imports of it succeed."""
    _glue_name = "DynamicFrameCollection"

    def __init__(self, dynamic_frames: dict, glue_ctx: Any = None):
        self._frames, self.glue_ctx = dict(dynamic_frames), glue_ctx

    def keys(self):
        return self._frames.keys()

    def values(self):
        return self._frames.values()

    def select(self, key: str, transformation_ctx: str = "") -> DynamicFrame:
        return self._frames[key]

    def __getitem__(self, key: str) -> DynamicFrame:
        return self._frames[key]

    def __len__(self) -> int:
        return len(self._frames)


def _as_list(paths) -> list[str]:
    return [paths] if isinstance(paths, str) else [str(p) for p in paths]


def _field_paths(schema, prefix: str = "") -> set[str]:
    """Every field path of ``schema`` (lower case; structs' fields as ``a.b``)."""
    from pyspark.sql.types import StructType
    out: set[str] = set()
    for f in schema.fields:
        path = f"{prefix}{f.name}".lower()
        out.add(path)
        if isinstance(f.dataType, StructType):
            out |= _field_paths(f.dataType, path + ".")
    return out
