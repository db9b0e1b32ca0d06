"""``awsglue.transforms``: the common transforms, each ``X.apply(frame=..., ...)`` or
``X()(frame, ...)`` calling the DynamicFrame method of the same meaning.

The other Glue transforms exist under their names (so ``from awsglue.transforms import *``
binds them) but fail when used, naming the call.
"""
from __future__ import annotations

from typing import Any

from local_runners.glue_compat.dynamicframe import DynamicFrame
from local_runners.glue_compat.unsupported import (GlueCompatError, Unsupported,
                                                   module_getattr, unsupported)

GLUE_NAME = "awsglue.transforms"
__getattr__ = module_getattr(GLUE_NAME)


class GlueTransform(Unsupported):
    _glue_name = "GlueTransform"

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()(*args, **kwargs)

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - overridden
        unsupported(f"awsglue.transforms.{type(self).__name__}")


def _frame(frame: Any, transform: str) -> DynamicFrame:
    if not isinstance(frame, DynamicFrame):
        raise GlueCompatError(f"awsglue compat: {transform} expects frame= a DynamicFrame, "
                              f"got {type(frame).__name__}")
    return frame


class ApplyMapping(GlueTransform):
    """Only the mapped fields, cast and renamed (AWS: "Returns only the fields of the
    DynamicFrame that are specified in the mapping tuples")."""

    def __call__(self, frame, mappings, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0, **kwargs):
        return _frame(frame, "ApplyMapping").apply_mapping(mappings)


class DropFields(GlueTransform):
    def __call__(self, frame, paths, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0):
        return _frame(frame, "DropFields").drop_fields(paths)


class SelectFields(GlueTransform):
    def __call__(self, frame, paths, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0):
        return _frame(frame, "SelectFields").select_fields(paths)


class RenameField(GlueTransform):
    def __call__(self, frame, old_name, new_name, transformation_ctx="", info="",
                 stageThreshold=0, totalThreshold=0):
        return _frame(frame, "RenameField").rename_field(old_name, new_name)


class DropNullFields(GlueTransform):
    """Drops the fields that are null (or missing) in every record (AWS: "fields with
    missing or null values in every record"). Top-level fields only; a frame with no
    records is returned unchanged."""

    def __call__(self, frame, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0):
        from pyspark.sql import functions as F
        df = _frame(frame, "DropNullFields").toDF()
        if not df.columns:
            return frame
        counts = df.select(F.count(F.lit(1)).alias("__rows__"),
                           *[F.count(F.col(f"`{c}`")).alias(f"c{i}")
                             for i, c in enumerate(df.columns)]).first()
        if counts["__rows__"] == 0:
            return frame
        empty = [c for i, c in enumerate(df.columns) if counts[f"c{i}"] == 0]
        return frame._new(df.drop(*empty))


class Filter(GlueTransform):
    def __call__(self, frame, f, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0):
        return _frame(frame, "Filter").filter(f)


class Map(GlueTransform):
    def __call__(self, frame, f, transformation_ctx="", info="", stageThreshold=0,
                 totalThreshold=0):
        return _frame(frame, "Map").map(f)


class ResolveChoice(GlueTransform):
    def __call__(self, frame, specs=None, choice="", database=None, table_name=None,
                 transformation_ctx="", info="", stageThreshold=0, totalThreshold=0,
                 catalog_id=None):
        return _frame(frame, "ResolveChoice").resolveChoice(
            specs=specs, choice=choice, database=database, table_name=table_name)


class Repartition(GlueTransform):
    def __call__(self, frame, num_partitions, transformation_ctx="", info="",
                 stageThreshold=0, totalThreshold=0):
        return _frame(frame, "Repartition").repartition(num_partitions)


class Coalesce(GlueTransform):
    def __call__(self, frame, num_partitions, shuffle=False, transformation_ctx="", info="",
                 stageThreshold=0, totalThreshold=0):
        return _frame(frame, "Coalesce").coalesce(num_partitions, shuffle)


def _unsupported_transform(name: str) -> type:
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        unsupported(f"awsglue.transforms.{name}")
    return type(name, (GlueTransform,), {"__call__": __call__, "_glue_name": name,
                                         "__module__": __name__})


_UNSUPPORTED = ("Unbox", "UnnestFrame", "Relationalize", "SplitFields", "SplitRows", "Join",
                "Spigot", "SelectFromCollection", "MapToCollection", "FlatMap",
                "ErrorsAsDynamicFrame", "Union")
globals().update({name: _unsupported_transform(name) for name in _UNSUPPORTED})

SUPPORTED = ("ApplyMapping", "DropFields", "SelectFields", "RenameField", "DropNullFields",
             "Filter", "Map", "ResolveChoice", "Repartition", "Coalesce")
__all__ = ["GlueTransform", *SUPPORTED, *_UNSUPPORTED]
