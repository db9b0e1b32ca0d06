"""Configuration: defaults, YAML loading, overrides and the errors a user sees."""
import pytest

from harness.config import PipelineConfig, load_config
from harness.errors import ConfigError


def test_project_config_file_is_valid():
    cfg = load_config()
    assert cfg.backend == "local"
    assert cfg.etl.glue_version in ("5.0", "5.1")
    assert cfg.deploy.host == "127.0.0.1"


def test_overrides_apply_dotted_fields(tmp_path):
    cfg = load_config(overrides={"train.hyperparameters.epochs": 2, "evaluate.threshold": 0.5})
    assert cfg.train.hyperparameters["epochs"] == 2
    assert cfg.evaluate.threshold == 0.5


def test_wrong_backend_names_field_and_allowed_values(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("backend: azure\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and "'backend'" in msg
    assert "'local'" in msg and "'emulator'" in msg and "'cloud'" in msg
    assert "azure" in msg


def test_unknown_field_lists_allowed_fields(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "train.epochs" in msg and "unknown field" in msg and "hyperparameters" in msg


def test_out_of_range_value(tmp_path):
    f = tmp_path / "p.yaml"
    # (evaluate.threshold has no range any more: the gate's metric may be the loss)
    f.write_text("deploy:\n  data_capture_percent: 150\n")
    with pytest.raises(ConfigError,
                       match=r"deploy\.data_capture_percent.*less than or equal to 100"):
        load_config(f)


def test_rows_per_file_is_a_job_argument_of_at_least_one(tmp_path):
    from harness.workflow import load_workflow

    cfg = load_config(overrides={"etl.rows_per_file": 2500})
    etl = load_workflow(cfg.pipeline, cfg).step("etl")
    assert etl.arguments["--rows_per_file"] == "2500"
    assert PipelineConfig().etl.rows_per_file == 10_000
    with pytest.raises(ConfigError, match=r"etl\.rows_per_file.*greater than or equal to 1"):
        load_config(overrides={"etl.rows_per_file": 0})


def test_bad_yaml_and_missing_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_metric_regex_needs_a_group():
    with pytest.raises(Exception, match="capture group"):
        PipelineConfig.model_validate(
            {"train": {"metric_definitions": [{"Name": "a", "Regex": "acc=[0-9]+"}]}})
