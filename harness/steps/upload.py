"""``UploadStep``: put local files where the state machine's jobs can read them.

Runs on the client before the execution (``BEFORE``). Its request names the files or
folders to stage (``Sources``: name -> URI) and where (``OutputUri``); its output maps each
name to the URI later steps read (``step.uri(name)``, a placeholder):

- locally (``local_runners.upload``) nothing moves: a ``file://`` source is already
  readable by the local runners, so the output is the sources;
- on the cloud backends (``cloud_runners.upload``) each ``file://`` source is uploaded
  under ``<OutputUri>/<name>/`` (a file keeps its name) and the output is that S3 URI; an
  ``s3://`` source is used where it is.

The drift monitoring workflow uses it for the captures and the model of a run made on
this machine; any workflow whose job reads a local file can.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from harness.errors import ConfigError
from harness.placeholders import Placeholder
from harness.steps.base import BEFORE, BuildContext, Step

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class UploadStep(Step):
    kind = "upload"
    title = "stage local files for the jobs"
    placement = BEFORE
    local_runner = "local_runners.upload:LocalUploadRunner"
    cloud_runner = "cloud_runners.upload:CloudUploadRunner"

    def __init__(self, state_id: str, *, sources: Mapping[str, str], output_uri: str,
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        if not sources:
            raise ConfigError("an upload step needs something to upload",
                              field=f"{state_id}.sources", expected="{name: URI}")
        for name, uri in sources.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ConfigError("not a usable name for an uploaded source",
                                  field=f"{state_id}.sources", got=name,
                                  expected="letters, digits, '-' and '_' (a key part)")
            if not isinstance(uri, str) or not uri.startswith(("file://", "s3://")):
                raise ConfigError("a source is a file:// or s3:// URI",
                                  field=f"{state_id}.sources.{name}", got=uri)
        self.sources = dict(sources)
        self.output_uri = output_uri

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        return {"Sources": dict(self.sources), "OutputUri": self.output_uri}

    def known_output(self) -> dict[str, Any] | None:
        """Sources all in S3 are used where they are: nothing to upload."""
        if all(uri.startswith("s3://") for uri in self.sources.values()):
            return {"Uris": dict(self.sources)}
        return None

    def uri(self, name: str) -> Placeholder:
        """Where later steps find the source ``name`` (the step's output)."""
        if name not in self.sources:
            raise ConfigError("no such uploaded source", field=f"{self.state_id}.sources",
                              expected=" | ".join(self.sources), got=name)
        return self.output()["Uris"][name]

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        return dict(output.get("Uris") or {})

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("S3 objects", f"local sources uploaded under {request['OutputUri']}")]
