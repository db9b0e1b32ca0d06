"""Request builders: the bodies that go to AWS are the ones the local runners execute."""
import re

from harness.config import load_config
from harness.pipeline import STEPS, BuildContext
from harness.requests import (
    Layout,
    Names,
    etl_request,
    glue_job_definition,
    hosting_requests,
    training_request,
)

PREPARED = {"RawUri": "s3://b/p/data/raw", "ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10}


def _ctx(base):
    cfg = load_config()
    return cfg, Layout(base), Names(cfg, "20261129-120000-ab12")


def test_glue_job_and_run_arguments_follow_the_glue_contract():
    cfg, layout, _ = _ctx("s3://bucket/prefix")
    job = glue_job_definition(cfg, layout, role="arn:aws:iam::123456789012:role/glue")
    assert job["Command"] == {"Name": "glueetl", "PythonVersion": "3",
                              "ScriptLocation": "s3://bucket/prefix/code/glue/mnist_etl.py"}
    assert job["GlueVersion"] == cfg.etl.glue_version
    run = etl_request(cfg, layout, PREPARED)
    assert set(run) == {"JobName", "Arguments"}
    assert all(k.startswith("--") and isinstance(v, str) for k, v in run["Arguments"].items())
    assert run["Arguments"]["--image_height"] == "28"


def test_training_request_is_script_mode():
    cfg, layout, names = _ctx("file:///tmp/run")
    body = training_request(cfg, layout, names, PREPARED, image="img")
    hps = body["HyperParameters"]
    assert all(isinstance(v, str) for v in hps.values())
    assert hps["sagemaker_program"] == "train.py"
    assert hps["sagemaker_submit_directory"] == "file:///tmp/run/code/sourcedir.tar.gz"
    assert hps["num_classes"] == "10" and hps["epochs"] == str(cfg.train.hyperparameters["epochs"])
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in body["InputDataConfig"]}
    assert channels == {s: f"file:///tmp/run/data/processed/{s}"
                        for s in ("train", "validation", "test")}
    names_in_defs = [m["Name"] for m in body["AlgorithmSpecification"]["MetricDefinitions"]]
    assert "test:accuracy" in names_in_defs
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", body["TrainingJobName"])


def test_local_and_cloud_training_requests_differ_only_in_uris_and_image():
    cfg, local, names = _ctx("file:///tmp/run")
    _, cloud, _ = _ctx("s3://bucket/prefix")
    a = training_request(cfg, local, names, PREPARED, image="local")
    b = training_request(cfg, cloud, names, PREPARED, image="123.dkr.ecr/tf:2.19")

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        if isinstance(x, list):
            return [strip(v) for v in x]
        if isinstance(x, str):
            return x.replace("file:///tmp/run", "<base>").replace("s3://bucket/prefix", "<base>")
        return x

    a["AlgorithmSpecification"]["TrainingImage"] = b["AlgorithmSpecification"]["TrainingImage"]
    assert strip(a) == strip(b)


def test_hosting_trio_refers_to_each_other_and_carries_the_run_id():
    cfg, _, names = _ctx("file:///tmp/run")
    trio = hosting_requests(cfg, names, "file:///tmp/run/model.tar.gz", image="img")
    model = trio["CreateModel"]["ModelName"]
    assert trio["CreateEndpointConfig"]["ProductionVariants"][0]["ModelName"] == model
    assert trio["CreateEndpoint"]["EndpointConfigName"] == \
        trio["CreateEndpointConfig"]["EndpointConfigName"]
    for name in (model, trio["CreateEndpoint"]["EndpointName"]):
        assert "20261129-120000-ab12" in name and len(name) <= 63


def test_every_step_builds_its_request_from_earlier_outputs():
    cfg, layout, names = _ctx("file:///tmp/run")
    b = BuildContext(cfg, layout, names, {"training": "t", "serving": "s"})
    fake_outputs = {
        "prepare": dict(PREPARED, RawUri="file:///old/data/raw"),
        "etl": {"OutputUri": "file:///old/data/processed"},
        "train": {"ModelArtifacts": {"S3ModelArtifacts": "file:///tmp/run/m.tar.gz"}},
        "evaluate": {},
        "deploy": {"EndpointName": "e"},
    }
    for step in STEPS:
        body = step.build(b)
        assert body
        b.outputs[step.name] = fake_outputs.get(step.name, {})
    # a resumed run reads the ETL output where it is, not where this run would put it
    train = STEPS[2].build(b)
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == \
        "file:///old/data/processed/train"


def test_several_training_instances_get_a_distributed_configuration():
    cfg, layout, names = _ctx("s3://bucket/prefix")
    single = training_request(cfg, layout, names, PREPARED, image="img")
    assert "sagemaker_multi_worker_mirrored_strategy_enabled" not in single["HyperParameters"]
    cfg.train.instance_count = 2
    multi = training_request(cfg, layout, names, PREPARED, image="img")
    assert multi["ResourceConfig"]["InstanceCount"] == 2
    assert multi["HyperParameters"]["sagemaker_multi_worker_mirrored_strategy_enabled"] == "true"
