"""A cloud run does not upload again what an earlier run uploaded with the same content
(``cloud_runners/upload_reuse.py``): the raw splits of the prepare step and the code. On
moto's S3: reused when the content is the same and the earlier objects are all there;
uploaded when a byte changed, an earlier object is gone, or the cache is off."""
import logging

import pytest
from cloud_support import resolved_request, workflow

from cloud_runners import aws as aws_mod
from cloud_runners.prepare import CloudPrepareRunner
from cloud_runners.setup import CloudSetup
from cloud_runners.upload_reuse import UploadIndex, tree_digest
from harness.stages import StageContext

BUCKET = "mlharness-test-bucket"
FIRST, SECOND, THIRD = "20261201-100000-aaaa", "20261201-110000-bbbb", "20261201-120000-cccc"
OUTPUTS = {"BucketName": BUCKET, "GlueRoleArn": "arn:aws:iam::123456789012:role/g",
           "SageMakerRoleArn": "arn:aws:iam::123456789012:role/s",
           "StepFunctionsRoleArn": "arn:aws:iam::123456789012:role/f"}


def base(run):
    return f"s3://{BUCKET}/mlharness/runs/{run}"


def keys(aws, uri):
    return aws_mod.list_keys(aws.client("s3"), uri)


def prepare(aws, cfg, run, said):
    request = resolved_request(workflow(cfg), "prepare",
                               {"RunId": run, "BaseUri": base(run), "CodeUri": f"{base(run)}/code"})
    ctx = StageContext(run_id=run, step="prepare", config=cfg,
                       log=logging.getLogger("test.prepare"), announce=said.append)
    return CloudPrepareRunner(aws).run(request, ctx)


@pytest.fixture
def s3(aws, cfg):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    cfg.data.source = "fixture"
    return aws.client("s3")


def test_the_same_raw_splits_are_uploaded_once(aws, cfg, s3):
    said = []
    first = prepare(aws, cfg, FIRST, said)
    assert first["RawUri"] == f"{base(FIRST)}/data/raw" and "UploadSkipped" not in first
    assert len(keys(aws, first["RawUri"])) == 3
    assert not [m for m in said if "same content" in m]
    said.clear()

    second = prepare(aws, cfg, SECOND, said)
    assert second["RawUri"] == first["RawUri"]  # the first run's upload
    assert not keys(aws, f"{base(SECOND)}/data/raw")  # nothing written for the second
    assert second["UploadSkipped"].startswith(
        f"raw splits: same content as {first['RawUri']} (run {FIRST}); 3 files")
    assert said[-1] == f"prepare: {second['UploadSkipped']}"
    assert {k: v for k, v in second.items() if k not in ("RawUri", "UploadSkipped")} == \
        {k: v for k, v in first.items() if k != "RawUri"}
    assert workflow(cfg).step("prepare").facts(second)["upload skipped"] == \
        second["UploadSkipped"]


def test_a_deleted_earlier_object_or_the_cache_off_uploads_again(aws, cfg, s3):
    first = prepare(aws, cfg, FIRST, [])
    doomed = keys(aws, first["RawUri"])[0]
    s3.delete_object(Bucket=BUCKET, Key=doomed)
    second = prepare(aws, cfg, SECOND, [])
    assert second["RawUri"] == f"{base(SECOND)}/data/raw" and "UploadSkipped" not in second
    assert len(keys(aws, second["RawUri"])) == 3
    cfg.cache.enabled = False  # --no-cache
    third = prepare(aws, cfg, THIRD, [])
    assert third["RawUri"] == f"{base(THIRD)}/data/raw" and "UploadSkipped" not in third


def test_other_data_is_uploaded(aws, cfg, s3):
    first = prepare(aws, cfg, FIRST, [])
    cfg.data.validation_fraction = 0.2 if cfg.data.validation_fraction != 0.2 else 0.15
    second = prepare(aws, cfg, SECOND, [])
    assert second["RawUri"] == f"{base(SECOND)}/data/raw" != first["RawUri"]


def test_the_index_checks_every_file_and_its_size(aws, s3, tmp_path):
    files = []
    for name, body in (("a/x.bin", b"1234"), ("b.txt", b"hello")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        files.append((name, path))
    index = UploadIndex(s3, BUCKET, "mlharness/runs")
    digest, earlier = index.find("raw", files)
    assert digest == tree_digest(list(reversed(files))) and earlier == {}
    for rel, path in files:
        s3.put_object(Bucket=BUCKET, Key=f"mlharness/runs/r1/data/{rel}", Body=path.read_bytes())
    index.remember("raw", digest, f"s3://{BUCKET}/mlharness/runs/r1/data", files, "r1")
    assert index.find("raw", files)[1]["run_id"] == "r1"
    # the same digest, but an earlier object of another size: not reused
    s3.put_object(Bucket=BUCKET, Key="mlharness/runs/r1/data/b.txt", Body=b"hello, world")
    assert index.find("raw", files)[1] == {}
    (tmp_path / "b.txt").write_bytes(b"hellO")  # one byte: another digest
    assert index.find("raw", files)[0] != digest


def test_code_with_the_same_content_is_not_uploaded_again(aws, cfg, s3, tmp_path):
    from harness.steps.base import CodeAsset

    script = tmp_path / "job.py"
    script.write_text("print('etl')\n")
    assets = [CodeAsset(source=script, target="etl/job.py", pack="file")]
    first = CloudSetup(cfg, session=aws, outputs=OUTPUTS)
    uris = first.stage_code(assets, base(FIRST), reuse=True)
    assert uris == {"etl/job.py": f"{base(FIRST)}/code/etl/job.py"}
    assert first.code_uri == f"{base(FIRST)}/code" and first.code_skipped is None

    second = CloudSetup(cfg, session=aws, outputs=OUTPUTS)
    assert second.stage_code(assets, base(SECOND), reuse=True) == uris
    assert second.code_uri == first.code_uri and not keys(aws, f"{base(SECOND)}/code")
    assert second.code_skipped.startswith(f"code: same content as {first.code_uri} "
                                          f"(run {FIRST}); 1 files")
    # without reuse (harness cloud monitor --schedule, create) it is uploaded as before
    assert second.stage_code(assets, base(SECOND)) == {
        "etl/job.py": f"{base(SECOND)}/code/etl/job.py"}
    script.write_text("print('etl v2')\n")  # an edited script is uploaded
    third = CloudSetup(cfg, session=aws, outputs=OUTPUTS)
    assert third.stage_code(assets, base(THIRD), reuse=True) == {
        "etl/job.py": f"{base(THIRD)}/code/etl/job.py"}
    assert third.code_skipped is None
