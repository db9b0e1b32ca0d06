"""Local backend for ``upload``: the local runners read ``file://`` sources where they are
(``harness.steps.upload``), so nothing moves; a source that does not exist is an error."""
from __future__ import annotations

from typing import Any

from harness import uris
from harness.errors import DataError
from harness.stages import StageContext, StageRunner


class LocalUploadRunner(StageRunner):
    kind = "upload"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        out = {}
        for name, uri in request["Sources"].items():
            if uri.startswith("file://") and not uris.local_path(uri).exists():
                raise DataError(f"source {name!r} not found", file=uri,
                                expected="an existing file or folder")
            out[name] = uri
        return {"Uris": out}
