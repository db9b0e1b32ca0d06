"""The SageMaker TensorFlow container images of the configured framework version.

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

from harness.config import PipelineConfig
from harness.errors import ConfigError
from harness.storage import write_json_atomic

IMAGE_CACHE = Path(os.environ.get("MLHARNESS_CACHE", "~/.cache/mlharness")).expanduser() \
    / "image_uris.json"


def _lookup(cfg: PipelineConfig) -> dict[str, str]:
    from sagemaker.core import image_uris  # heavy import: only when the cloud needs it

    t = cfg.train
    try:
        training = image_uris.retrieve("tensorflow", region=cfg.cloud.region,
                                       version=t.framework_version,
                                       instance_type=t.instance_type, image_scope="training",
                                       py_version=t.py_version)
        serving = image_uris.retrieve("tensorflow", region=cfg.cloud.region,
                                      version=t.framework_version,
                                      instance_type=cfg.deploy.instance_type,
                                      image_scope="inference")
    except ValueError as e:
        raise ConfigError(f"no TensorFlow {t.framework_version} image: {e}",
                          field="cloud.region / train.instance_type / deploy.instance_type",
                          expected="a region and instance types with SageMaker TensorFlow "
                                   "images") from None
    return {"training": training, "serving": serving}


def images_for(cfg: PipelineConfig, cache: Path | str | None = "default"
               ) -> dict[str, str]:
    """``{"training": uri, "serving": uri}`` for ``cfg.cloud.region`` (``cache=None``:
    always look up)."""
    from importlib.metadata import version

    if cache == "default":
        cache = IMAGE_CACHE  # read at call time: tests point it elsewhere
    t = cfg.train
    key = "|".join([version("sagemaker-core"), cfg.cloud.region, t.framework_version,
                    t.py_version, t.instance_type, cfg.deploy.instance_type])
    entries: dict[str, Any] = {}
    if cache is not None:
        try:
            entries = json.loads(Path(cache).read_text())
            if isinstance(entries.get(key), dict):
                return entries[key]
        except (OSError, ValueError, AttributeError):
            entries = {}
    found = _lookup(cfg)
    if cache is not None:
        try:
            entries = entries if isinstance(entries, dict) else {}
            entries[key] = found
            write_json_atomic(cache, entries)
        except OSError:
            pass  # a read-only home only costs time
    return found
