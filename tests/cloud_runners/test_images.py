"""SageMaker framework images from sagemaker-core's tables (no network), and their cache."""
import json

import pytest

from cloud_runners import images
from cloud_runners.images import image_uri
from harness.errors import ConfigError

pytest.importorskip("sagemaker.core")

TRAINING = ("tensorflow", "2.19", "training", "ml.m5.xlarge", "py312")
INFERENCE = ("tensorflow", "2.19", "inference", "ml.m5.large")


def test_lookup_without_cache():
    assert image_uri("us-east-1", *TRAINING, cache=None).endswith(
        ".dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-cpu-py312")
    assert image_uri("us-east-1", *INFERENCE, cache=None).endswith(
        ".dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.19-cpu")
    assert ".eu-west-1." in image_uri("eu-west-1", *TRAINING, cache=None)
    assert "-gpu-py312" in image_uri("us-east-1", "tensorflow", "2.19", "training",
                                     "ml.g4dn.xlarge", "py312", cache=None)


def test_answers_are_cached_by_version_and_arguments(tmp_path, monkeypatch):
    cache = tmp_path / "images.json"
    direct = image_uri("us-east-1", *TRAINING, cache=None)
    assert image_uri("us-east-1", *TRAINING, cache=cache) == direct
    entries = json.loads(cache.read_text())
    (key, value), = entries.items()
    assert value == direct
    assert key.split("|")[1:] == ["us-east-1", *TRAINING]  # the sagemaker-core version first
    # A cached answer is served without a lookup.
    monkeypatch.setattr(images, "_lookup", lambda *a: pytest.fail("looked up again"))
    assert image_uri("us-east-1", *TRAINING, cache=cache) == direct


def test_default_cache_is_read_at_call_time(image_cache):
    image_uri("us-east-1", *INFERENCE)
    assert any(v.endswith("tensorflow-inference:2.19-cpu")
               for v in json.loads(image_cache.read_text()).values())


def test_a_broken_cache_file_is_replaced(tmp_path):
    cache = tmp_path / "images.json"
    cache.write_text("{not json")
    assert image_uri("us-east-1", *INFERENCE, cache=cache).endswith("tensorflow-inference:2.19-cpu")
    assert len(json.loads(cache.read_text())) == 1


def test_unknown_version_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        image_uri("us-east-1", "tensorflow", "0.1", "training", "ml.m5.xlarge", "py312",
                  cache=None)
    assert "framework_version" in exc.value.field
