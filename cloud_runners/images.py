"""The SageMaker framework container images (TensorFlow training, inference) a step names.

Looked up with sagemaker-core's ``image_uris`` (SageMaker SDK 3 family): the account id
and registry of each region come from the SDK's own tables (no network), never from
this code. Importing sagemaker-core takes ~1.7 s, most of `harness cloud plan`'s time,
so answers are kept in a small cache keyed by the sagemaker-core version and every
argument of the lookup (an upgrade can't serve stale values).

Python versions differ between the places the code runs: the TensorFlow 2.19 *training*
image runs Python 3.12 (``py312``; sagemaker-core 2.27 lists no other py_version for it),
while Glue 5.x and the project's local venv run Python 3.11. ``model/`` therefore sticks
to syntax and libraries that work on both 3.11 and 3.12. The *inference* image is TF
Serving (C++) plus an nginx/gunicorn front end; ``code/inference.py`` runs on that image's
Python.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.storage import write_json_atomic

IMAGE_CACHE = Path(os.environ.get("MLHARNESS_CACHE", "~/.cache/mlharness")).expanduser() \
    / "image_uris.json"


def _lookup(region: str, framework: str, version: str, scope: str, instance_type: str,
            py_version: str | None) -> str:
    from sagemaker.core import image_uris  # heavy import: only when the cloud needs it

    kw: dict[str, Any] = {"region": region, "version": version,
                          "instance_type": instance_type, "image_scope": scope}
    if py_version and scope == "training":
        kw["py_version"] = py_version
    try:
        return image_uris.retrieve(framework, **kw)
    except ValueError as e:
        raise ConfigError(f"no {framework} {version} {scope} image: {e}",
                          field="cloud.region / the step's instance_type or framework_version",
                          expected=f"a region and instance type with SageMaker {framework} "
                                   "images") from None


def image_uri(region: str, framework: str, version: str, scope: str, instance_type: str,
              py_version: str | None = None, cache: Path | str | None = "default") -> str:
    """The SageMaker framework image for ``scope`` (training | inference) in ``region``
    (``cache=None``: always look up)."""
    from importlib.metadata import version as package_version

    if cache == "default":
        cache = IMAGE_CACHE  # read at call time: tests point it elsewhere
    key = "|".join([package_version("sagemaker-core"), region, framework, version, scope,
                    instance_type, py_version or ""])
    entries: dict[str, Any] = {}
    if cache is not None:
        try:
            entries = json.loads(Path(cache).read_text())
            if isinstance(entries.get(key), str):
                return entries[key]
        except (OSError, ValueError, AttributeError):
            entries = {}
    found = _lookup(region, framework, version, scope, instance_type, py_version)
    if cache is not None:
        try:
            entries = entries if isinstance(entries, dict) else {}
            entries[key] = found
            write_json_atomic(cache, entries)
        except OSError:
            pass  # a read-only home only costs time
    return found
