"""The cloud backend's setup on moto: where a run lives, the code the steps run uploaded
under it, the Glue jobs the steps name created or updated (``cloud_runners.etl``)."""
import io
import tarfile

import pytest
from cloud_support import REGION, answer, capture

from cloud_runners import aws as aws_mod
from cloud_runners.credentials import NoCredentials
from cloud_runners.etl import upsert_glue_job
from cloud_runners.setup import CloudImages, CloudSetup
from cloud_runners.stack import StackMissing
from harness.errors import ConfigError, StepFailed
from harness.steps.base import SetupRequest
from harness.tags import resource_tags

BUCKET = "mlharness-test-bucket"
RUN = "20261129-120000-ab12"
ROLES = {"GlueRoleArn": "arn:aws:iam::123456789012:role/mlharness-glue",
         "SageMakerRoleArn": "arn:aws:iam::123456789012:role/mlharness-sagemaker",
         "StepFunctionsRoleArn": "arn:aws:iam::123456789012:role/mlharness-states"}


@pytest.fixture
def setup(aws, cfg):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return CloudSetup(cfg, session=aws, outputs={"BucketName": BUCKET, **ROLES})


def keys(aws, uri):
    base = aws_mod.split_s3(uri)[1].rstrip("/") + "/"
    return sorted(k.removeprefix(base) for k in aws_mod.list_keys(aws.client("s3"), uri))


def test_where_the_run_lives_and_which_roles(setup, cfg):
    assert setup.bucket == BUCKET
    assert setup.run_prefix(RUN) == f"mlharness/runs/{RUN}"
    assert setup.base_uri(RUN) == f"s3://{BUCKET}/mlharness/runs/{RUN}"
    assert setup.role == ROLES["SageMakerRoleArn"]
    assert setup.roles == {"glue": ROLES["GlueRoleArn"], "sagemaker": ROLES["SageMakerRoleArn"],
                           "stepfunctions": ROLES["StepFunctionsRoleArn"]}
    cfg.cloud.bucket = "configured-bucket"
    assert setup.bucket == "configured-bucket"


def test_images_follow_the_region(cfg):
    cfg.cloud.region = "eu-west-1"
    uri = CloudImages(cfg).image("tensorflow", "2.19", "inference", "ml.m5.large")
    assert ".eu-west-1." in uri and uri.endswith("tensorflow-inference:2.19-cpu")


def test_stage_code_uploads_every_asset_of_the_workflow(aws, setup, cfg, wf):
    base = setup.base_uri(RUN)
    uris = setup.stage_code(wf.code(), base)
    assert uris == {"etl/mnist_etl.py": f"{base}/code/etl/mnist_etl.py",
                    "train/sourcedir.tar.gz": f"{base}/code/train/sourcedir.tar.gz",
                    "evaluate": f"{base}/code/evaluate"}
    staged = keys(aws, f"{base}/code")
    assert {"etl/mnist_etl.py", "train/sourcedir.tar.gz", "evaluate/evaluate.py",
            "evaluate/train.py"} <= set(staged)
    assert not [k for k in staged if "__pycache__" in k]
    bucket, key = aws_mod.split_s3(uris["train/sourcedir.tar.gz"])
    data = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert cfg.train.entry_point in tar.getnames()


def _glue_requests(setup, cfg, wf):
    ctx = wf.build_context("cloud", setup.images, role=setup.role, roles=setup.roles,
                           tags=resource_tags(cfg, RUN))
    uris = setup.stage_code(wf.code(), setup.base_uri(RUN))
    return [r for s in wf.steps for r in s.setup_requests(uris, ctx)]


def test_create_makes_the_glue_job_of_the_step(aws, setup, cfg, wf):
    requests = _glue_requests(setup, cfg, wf)
    created = capture(aws, "glue.CreateJob")
    registry = setup.create(requests, RUN)
    assert list(registry) == ["glue:CreateJob"]
    assert registry["glue:CreateJob"]["mnist-etl"]["_action"] == "created"
    job = aws.client("glue").get_job(JobName=cfg.etl.job_name)["Job"]
    assert job["Command"]["ScriptLocation"] == f"{setup.base_uri(RUN)}/code/etl/mnist_etl.py"
    assert job["Role"] == ROLES["GlueRoleArn"]
    assert (job["GlueVersion"], job["WorkerType"], job["NumberOfWorkers"]) == (
        cfg.etl.glue_version, cfg.etl.worker_type, cfg.etl.number_of_workers)
    assert job["DefaultArguments"]["--conf"] == "spark.sql.shuffle.partitions=4"
    assert created[0]["Tags"] == aws_mod.glue_tags(cfg, RUN)


def test_a_second_create_updates_the_glue_job(aws, setup, cfg, wf):
    requests = _glue_requests(setup, cfg, wf)
    setup.create(requests, RUN)
    updates = capture(aws, "glue.UpdateJob")
    answer(aws, "glue.UpdateJob", {"JobName": "mnist-etl"})  # moto 5.2.5 has no UpdateJob
    requests[0].body["NumberOfWorkers"] = 5
    registry = setup.create(requests, "another-run")
    assert registry["glue:CreateJob"]["mnist-etl"]["_action"] == "updated"
    expected = {k: v for k, v in requests[0].body.items() if k != "Name"}
    assert updates == [{"JobName": "mnist-etl", "JobUpdate": expected}]


def test_upsert_reports_a_refused_create(aws):
    body = {"Name": "mnist-etl", "Role": "arn:role", "Command": {"Name": "glueetl"}}
    answer(aws, "glue.CreateJob", {"Error": {"Code": "AccessDeniedException",
                                             "Message": "not allowed"}}, status=400)
    with pytest.raises(StepFailed, match="Glue CreateJob mnist-etl failed: "
                                         "AccessDeniedException: not allowed") as exc:
        upsert_glue_job(aws.client("glue", region_name=REGION), body, step="setup")
    assert exc.value.step == "setup"


def test_create_refuses_what_the_cloud_cannot_create(setup):
    with pytest.raises(ConfigError, match="cannot create sagemaker:CreateFeatureGroup"):
        setup.create([SetupRequest("sagemaker", "CreateFeatureGroup", "fg", {})], RUN)


def test_check_needs_credentials_and_the_stack(aws, cfg):
    with pytest.raises(StackMissing, match="harness cloud bootstrap"):
        CloudSetup(cfg, session=aws).check()


def test_check_without_credentials(no_aws, cfg):
    with pytest.raises(NoCredentials):
        CloudSetup(cfg).check()
    assert no_aws == []
