"""Cloud ``prepare``: obtain the data on this machine, upload the raw Parquet to S3.

In the cloud the prepare step runs on the client (see ``harness.asl``): the local prepare
runner writes the raw splits into a temporary directory (``cloud_runners.s3_staging``),
then every file is uploaded
under the request's ``s3://`` ``OutputUri`` with the same relative keys
(``<split>/part-00000.parquet``). The output is the local output with ``RawUri`` = the
S3 URI. An existing S3 output is never overwritten.

Splits with the same content as an earlier run's upload are not uploaded again
(``cloud_runners.upload_reuse``): ``RawUri`` is then that upload, ``UploadSkipped`` says so.
"""
from __future__ import annotations

from typing import Any

from cloud_runners import aws
from cloud_runners.s3_staging import S3Staging
from cloud_runners.upload_reuse import index_for, relative_files, skipped_message
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
        with S3Staging(s3, prefix="mlharness-prepare-") as staging:
            local = LocalPrepareRunner().run(
                {**request, "OutputUri": staging.local_uri("raw", output_uri)}, ctx)
            files = relative_files(staging.path("raw"))
            index = index_for(s3, output_uri, ctx.config)
            digest, earlier = index.find("raw", files)
            if earlier:
                said = skipped_message("raw splits", earlier, files)
                ctx.log.info(said)
                ctx.announce(f"{ctx.step}: {said}")
                return {**local, "RawUri": earlier["uri"], "UploadSkipped": said}
            with ctx.progress.task("upload raw splits to S3", total=len(files)) as task:
                staging.upload(staging.path("raw"), output_uri,
                               on_file=lambda path: task.advance(1))
            index.remember("raw", digest, output_uri, files, ctx.run_id)
        ctx.log.info("raw splits uploaded to %s (%d files)", output_uri, len(files))
        return {**local, "RawUri": output_uri}
