"""Cloud ``evaluate``: the local evaluation, run on files downloaded from S3.

Downloads ``model.tar.gz`` and the test split to a temporary directory, runs the local
evaluate runner on them (the same SavedModel signature, metrics and plot), then uploads
``evaluation.json`` and ``confusion_matrix.png`` to the request's ``s3://`` OutputUri.
The output has the local shape, with S3 URIs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cloud_runners import aws
from harness import uris
from harness.errors import HarnessError
from harness.stages import StageContext
from harness.storage import read_json, write_json_atomic
from local_runners.evaluate import LocalEvaluateRunner, _required


class CloudEvaluateRunner(aws.CloudStageRunner):
    kind = "evaluate"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        model_uri = _required(request, "ModelArtifacts")
        test_uri = _required(request, "TestDataUri")
        output_uri = _required(request, "OutputUri")
        s3 = self.client(ctx, "s3")
        if aws.prefix_exists(s3, output_uri):
            raise HarnessError("evaluation output already exists in S3; refusing to overwrite "
                               "it", file=output_uri, hint="start a new run")
        with tempfile.TemporaryDirectory(prefix="mlharness-evaluate-") as tmp:
            tmp_dir = Path(tmp)
            with ctx.progress.task("download model and test split", total=None):
                archive = aws.download_file(s3, model_uri, tmp_dir / "model.tar.gz")
                test_dir = aws.download_prefix(s3, test_uri, tmp_dir / "test")
            out_dir = tmp_dir / "evaluation"
            local = LocalEvaluateRunner().run(
                {**request, "ModelArtifacts": uris.file_uri(archive),
                 "TestDataUri": uris.file_uri(test_dir), "OutputUri": uris.file_uri(out_dir)},
                ctx)
            # The report names where the model and the data came from: S3, not the temp dir.
            report = read_json(out_dir / "evaluation.json")
            report.update(ModelArtifacts=model_uri, TestDataUri=test_uri)
            write_json_atomic(out_dir / "evaluation.json", report)
            uploaded = aws.upload_dir(s3, out_dir, output_uri)
            local_base = uris.file_uri(out_dir)
        ctx.log.info("evaluation uploaded: %s", ", ".join(uploaded))
        # Every URI of the local output that points into the temp dir now points to S3.
        return {k: output_uri + v[len(local_base):]
                if isinstance(v, str) and v.startswith(local_base + "/") else v
                for k, v in local.items()}
