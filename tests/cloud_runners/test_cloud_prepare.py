"""Cloud ``prepare`` (``cloud_runners/prepare.py``) on moto: the data obtained on this
machine, the raw splits uploaded under the step's ``OutputUri`` with the local keys; an
existing output is never overwritten. (Not ``test_prepare.py``: the local runner's test
has that module name, and test modules share one namespace.)"""
import pytest
from cloud_support import resolved_request, stage_context, workflow

from cloud_runners import aws as aws_mod
from cloud_runners.prepare import CloudPrepareRunner
from harness.errors import DataError

BUCKET = "mlharness-test-bucket"
RUN = "20261129-120000-ab12"
BASE = f"s3://{BUCKET}/mlharness/runs/{RUN}"


def test_prepare_uploads_the_raw_splits_with_the_local_keys(aws, cfg):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    cfg.data.source = "fixture"
    request = resolved_request(workflow(cfg), "prepare", {"RunId": RUN, "BaseUri": BASE, "CodeUri": f"{BASE}/code"})
    assert request["OutputUri"] == f"{BASE}/data/raw" and request["Source"] == "fixture"
    out = CloudPrepareRunner(aws).run(request, stage_context(cfg, "prepare", RUN))
    assert out["RawUri"] == f"{BASE}/data/raw"
    base = aws_mod.split_s3(out["RawUri"])[1] + "/"
    keys = sorted(k.removeprefix(base)
                  for k in aws_mod.list_keys(aws.client("s3"), out["RawUri"]))
    assert keys == [f"{s}/part-00000.parquet" for s in ("test", "train", "validation")]
    assert out["NumClasses"] == 10 and (out["ImageHeight"], out["ImageWidth"]) == (28, 28)
    assert sum(out["Counts"].values()) == 5000
    # S3 names only: nothing of the staging folder (SourceLocation is where the data was
    # read from on this machine, the bundled sample)
    assert "mlharness-prepare-" not in str(out) and "file://" not in str(out)
    with pytest.raises(DataError, match="already exists in S3"):
        CloudPrepareRunner(aws).run(request, stage_context(cfg, "prepare", RUN))


def test_prepare_needs_an_s3_output(aws, cfg):
    with pytest.raises(Exception, match="expected an s3:// URI"):
        CloudPrepareRunner(aws).run({"OutputUri": "file:///tmp/raw", "Source": "fixture"},
                                    stage_context(cfg, "prepare"))
