"""The pipeline API: chaining, the checks a definition gets, the graph, loading a pipeline."""
import xml.etree.ElementTree as ET

import pytest

from harness.errors import ConfigError
from harness.steps import (
    Chain,
    EndpointConfigStep,
    EndpointStep,
    Gate,
    GlueStartJobRunStep,
    InferenceStep,
    ModelStep,
    PrepareDataStep,
    TrainingStep,
)
from harness.workflow import Workflow, load_workflow, run_path


@pytest.fixture
def code(tmp_path):
    (tmp_path / "etl.py").write_text("print('etl')\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('train')\n")
    return tmp_path


def steps(code, **train_kw):
    prepare = PrepareDataStep("prepare", output_uri=run_path("raw"))
    etl = GlueStartJobRunStep("etl", job_name="my-etl", script=code / "etl.py",
                              arguments={"--in": run_path("raw"), "--out": run_path("clean"),
                                         "--h": prepare.output()["ImageHeight"]})
    train = TrainingStep("train", job_name="my-train", source_dir=code / "src",
                         entry_point="train.py", output_path=run_path("training"),
                         inputs={"train": run_path("clean", "train")}, **train_kw)
    gate = Gate("gate", json_uri=run_path("eval", "e.json"), metric="metrics.f1",
                threshold=0.9, retry_from=train)
    model = ModelStep("model", model_name="my-model",
                      model_data=train.output()["ModelArtifacts"]["S3ModelArtifacts"])
    config = EndpointConfigStep("config", endpoint_config_name="my-config",
                                model_name=model.model_name)
    endpoint = EndpointStep("endpoint", endpoint_name="my-endpoint",
                            endpoint_config_name=config.endpoint_config_name)
    infer = InferenceStep("infer", endpoint=endpoint, test_data_uri=run_path("clean", "test"),
                          output_uri=run_path("inference"))
    return [prepare, etl, train, gate, model, config, endpoint, infer]


def test_chain_with_rshift_and_chain_objects_link_the_same_way(code):
    a = steps(code)
    wf = Workflow("w", a[0] >> a[1] >> a[2] >> a[3] >> a[4] >> a[5] >> a[6] >> a[7])
    b = steps(code)
    wf2 = Workflow("w", Chain(b))
    assert [s.state_id for s in wf.main_path] == [s.state_id for s in wf2.main_path] == [
        "prepare", "etl", "train", "gate", "model", "config", "endpoint", "infer"]
    assert [s.state_id for s in wf.before_steps()] == ["prepare"]
    assert [s.state_id for s in wf.after_steps()] == ["infer"]
    assert wf.step("train").kind == "training"
    with pytest.raises(ConfigError, match="one of prepare, etl"):
        wf.step("nope")


def test_name_prefixes_scope_what_runs_create(code):
    wf = Workflow("w", Chain(steps(code)))
    assert wf.name_prefixes() == {"glue-job": "my-etl", "training-job": "my-train",
                                  "model": "my-model", "endpoint-config": "my-config",
                                  "endpoint": "my-endpoint"}
    assert wf.emulator_bridges() == [
        "cloud_runners.emulator.bridge:GlueBridge",
        "cloud_runners.emulator.training_bridge:TrainingBridge",
        "cloud_runners.emulator.hosting_bridge:HostingBridge"]


def test_definition_mistakes_are_named(code):
    a = steps(code)
    with pytest.raises(ConfigError, match="two steps are named 'train'"):
        Workflow("w", Chain([a[0], a[2], TrainingStep(
            "train", job_name="x", source_dir=code / "src", entry_point="train.py",
            output_path=run_path("t"), inputs={"train": run_path("c")})]))
    b = steps(code)
    with pytest.raises(ConfigError, match="step 'etl' runs in the state machine but follows step 'infer'"):
        Workflow("w", Chain([b[0], b[7], b[1]]))
    with pytest.raises(ConfigError, match="entry point is not in the source dir"):
        TrainingStep("t", job_name="x", source_dir=code / "src", entry_point="missing.py",
                     output_path=run_path("t"), inputs={"train": run_path("c")})
    with pytest.raises(ConfigError, match="file not found"):
        GlueStartJobRunStep("e", job_name="j", script=code / "missing.py")
    with pytest.raises(ConfigError, match="metric"):
        Gate("g", json_uri=run_path("x.json"), metric="metrics.test:acc", threshold=1)


def test_an_output_used_before_its_step_runs_is_refused(code):
    a = steps(code)
    early = GlueStartJobRunStep("early", job_name="e2", script=code / "etl.py",
                                arguments={"--model": a[2].output()["ModelArtifacts"]})
    wf = Workflow("w", Chain([a[0], early, a[2]]))
    with pytest.raises(ConfigError, match="step 'train' has not run at that point"):
        wf.definition()


def test_the_cloud_only_keeps_the_selected_fields(code):
    a = steps(code)
    peek = GlueStartJobRunStep("peek", job_name="e3", script=code / "etl.py",
                               arguments={"--hp": a[2].output()["HyperParameters"]})
    wf = Workflow("w", Chain([a[0], a[1], a[2], peek]))
    with pytest.raises(ConfigError, match="keeps only TrainingJobName, ModelArtifacts"):
        wf.definition()


def test_the_graph_shows_every_step_where_it_runs(code, tmp_path):
    wf = Workflow("w", Chain(steps(code)))
    g = wf.render_graph({"prepare": "SUCCEEDED", "etl": "FAILED"})
    text = str(g)
    assert text.startswith("flowchart TD") and 'subgraph sm["state machine"]' in text
    for s in wf.steps:
        assert f"{s.state_id}<br/>" in text
    assert "n_gate -->|not met| n_gate_stop" in text and "fill:#ffcdd2" in text
    root = ET.fromstring(g.svg())
    assert root.tag.endswith("svg")
    png = g.save(tmp_path / "g.png")
    import matplotlib.image as mpimg
    assert mpimg.imread(png).shape[0] > 100
    assert "not met -> stop" in repr(g)
    page = (tmp_path / "g.html")
    g.save(page)
    assert "<svg" in page.read_text() and "flowchart TD" in page.read_text()
    g.save(tmp_path / "g.mmd")
    assert (tmp_path / "g.mmd").read_text() == text
    import json
    assert json.loads(wf.to_json()) == wf.definition()


def test_a_pipeline_module_is_loaded_by_path(tmp_path, code):
    (tmp_path / "my_pipeline.py").write_text(f'''
from pathlib import Path
from harness.steps import GlueStartJobRunStep
from harness.workflow import Workflow, run_path

def build(cfg):
    return Workflow("mine", GlueStartJobRunStep(
        "etl", job_name="mine-etl", script=Path({str(code / 'etl.py')!r}),
        arguments={{"--out": run_path("out")}}))
''')
    from harness.config import PipelineConfig
    wf = load_workflow(f"{tmp_path / 'my_pipeline.py'}:build", PipelineConfig())
    assert wf.name == "mine" and [s.state_id for s in wf.steps] == ["etl"]
    with pytest.raises(ConfigError, match="has no 'other'"):
        load_workflow(f"{tmp_path / 'my_pipeline.py'}:other", PipelineConfig())
    with pytest.raises(ConfigError, match="pipeline module not found"):
        load_workflow("nowhere/pipe.py:build", PipelineConfig())
