"""Cloud ``prepare``: obtain the data on this machine, upload the raw Parquet to S3.

In the cloud the prepare step runs on the client (see ``harness.asl``): the local prepare
runner writes the raw splits into a temporary directory, then every file is uploaded
under the request's ``s3://`` ``OutputUri`` with the same relative keys
(``<split>/part-00000.parquet``). The output is the local output with ``RawUri`` = the
S3 URI. An existing S3 output is never overwritten.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cloud_runners import aws
from harness import uris
from harness.errors import DataError
from harness.stages import StageContext
from local_runners.prepare import LocalPrepareRunner


class CloudPrepareRunner(aws.CloudStageRunner):
    kind = "prepare"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        output_uri = request["OutputUri"]
        aws.split_s3(output_uri)
        s3 = self.client(ctx, "s3")
        if aws.prefix_exists(s3, output_uri):
            raise DataError("raw data output already exists in S3; refusing to overwrite it",
                            file=output_uri, hint="earlier runs are never modified")
        with tempfile.TemporaryDirectory(prefix="mlharness-prepare-") as tmp:
            local_dir = Path(tmp) / "raw"
            local = LocalPrepareRunner().run({**request, "OutputUri": uris.file_uri(local_dir)},
                                             ctx)
            files = sorted(p for p in local_dir.rglob("*") if p.is_file())
            with ctx.progress.task("upload raw splits to S3", total=len(files)) as task:
                for path in files:
                    rel = path.relative_to(local_dir).as_posix()
                    aws.upload_file(s3, path, uris.join(output_uri, rel))
                    task.advance(1)
        ctx.log.info("raw splits uploaded to %s (%d files)", output_uri, len(files))
        return {**local, "RawUri": output_uri}
