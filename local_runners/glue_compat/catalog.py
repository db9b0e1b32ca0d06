"""The local stand-in for the Glue Data Catalog: a YAML or JSON file.

The file is named by the ``MLHARNESS_GLUE_CATALOG`` environment variable (or passed to
``installed(catalog=...)``) and maps ``database.table`` to where the table's data is and
how it is stored::

    legislators.persons_json:
      location: data/persons        # plain path (relative to the catalog file), file://
      format: json                  # csv | json | parquet | orc
      format_options: {}            # as in from_options, e.g. {withHeader: true}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from local_runners.glue_compat.runtime import Runtime
from local_runners.glue_compat.unsupported import GlueCompatError


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise GlueCompatError(f"awsglue compat: cannot read the local catalog file {path}: "
                              f"{e.strerror or e}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise GlueCompatError(f"awsglue compat: the local catalog file {path} is not valid "
                              f"{'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise GlueCompatError(f"awsglue compat: the local catalog file {path} must map "
                              "'database.table' to {location, format, format_options}")
    return data


def table(rt: Runtime, database: str | None, table_name: str | None) -> dict[str, Any]:
    """``{"location", "format", "format_options"}`` of ``database.table_name``; a relative
    location is relative to the catalog file."""
    if not database or not table_name:
        raise GlueCompatError("awsglue compat: from_catalog needs database= and table_name=")
    path = rt.catalog_file()
    entries = _load(path)
    key = f"{database}.{table_name}"
    entry = entries.get(key)
    if not isinstance(entry, dict) or not entry.get("location") or not entry.get("format"):
        known = ", ".join(sorted(entries)) or "none"
        raise GlueCompatError(f"awsglue compat: table {key} is not in the local catalog "
                              f"{path} (tables: {known}), or lacks location/format")
    location = str(entry["location"])
    if "://" not in location and not Path(location).expanduser().is_absolute():
        location = str((path.parent / location).resolve())
    return {"location": location, "format": str(entry["format"]),
            "format_options": dict(entry.get("format_options") or {})}
