"""The state of the layer while a script runs: the SparkSession, the path resolver, the
step's logger, the local catalog file, and what the script's Job objects did."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote, urlparse

from local_runners.glue_compat.unsupported import GlueCompatError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The environment variable naming the local Glue Data Catalog file (YAML or JSON).
CATALOG_ENV = "MLHARNESS_GLUE_CATALOG"

S3_SCHEMES = ("s3://", "s3a://", "s3n://")

# A resolver maps a location as the script wrote it to one Spark can read and write: a
# local path (plain or file://) or any URI Spark's Hadoop file systems understand.
Resolver = Callable[[str], str]


def default_resolver(location: str) -> str:
    """Plain paths and ``file://`` URIs as they are; ``s3://`` fails, naming the path."""
    if location.startswith(S3_SCHEMES):
        raise GlueCompatError(
            f"s3:// paths need the emulator or cloud backend: {location} (the local "
            "backend reads and writes plain paths and file:// URIs only)")
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise GlueCompatError(f"awsglue compat: unsupported location {location!r}; "
                              "expected a plain path, file:// or s3://")
    return location


def local_path(location: str) -> Path | None:
    """The filesystem path of a resolved location, or None when it is not local."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(location).expanduser().absolute()
    return None


@dataclass
class Runtime:
    spark: "SparkSession"
    resolver: Resolver = default_resolver
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("awsglue.compat"))
    catalog: str | os.PathLike | None = None
    jobs_initialised: list[str] = field(default_factory=list)
    commits: int = 0

    def resolve(self, location: str) -> str:
        if not isinstance(location, str) or not location:
            raise GlueCompatError(f"awsglue compat: expected a path, got {location!r}")
        return self.resolver(location)

    def catalog_file(self) -> Path:
        where = self.catalog or os.environ.get(CATALOG_ENV)
        if not where:
            raise GlueCompatError(
                "awsglue compat: from_catalog needs a local catalog file: set the "
                f"{CATALOG_ENV} environment variable to a YAML or JSON file mapping "
                "'database.table' to {location, format, format_options}")
        return Path(where).expanduser()


_current: Runtime | None = None


def current() -> Runtime:
    if _current is None:
        raise GlueCompatError("awsglue compat: the layer is not installed; GlueContext and "
                              "Job work only while the local ETL runner runs a script")
    return _current


def swap(rt: Runtime | None) -> Runtime | None:
    """Make ``rt`` the current runtime; return the previous one."""
    global _current
    previous, _current = _current, rt
    return previous
