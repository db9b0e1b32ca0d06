import pytest

from harness.config import TrainConfig
from harness.errors import ConfigError
from harness.metrics import MetricParser

DEFS = [m.model_dump() for m in TrainConfig().metric_definitions]


def test_epoch_line_yields_every_configured_training_metric():
    p = MetricParser(DEFS)
    found = p.feed("epoch=3/6 train_loss=0.1234 train_accuracy=0.9600 val_loss=0.1500 "
                   "val_accuracy=0.9550")
    assert dict(found) == {"train:loss": 0.1234, "train:accuracy": 0.96,
                           "validation:loss": 0.15, "validation:accuracy": 0.955}


def test_final_holds_last_value_of_each_metric_seen():
    p = MetricParser(DEFS)
    p.feed("epoch=1/2 train_loss=0.9 train_accuracy=0.7 val_loss=0.8 val_accuracy=0.75")
    p.feed("some unrelated log line")
    p.feed("epoch=2/2 train_loss=0.3 train_accuracy=0.9 val_loss=0.4 val_accuracy=0.88")
    p.feed("test_loss=0.41 test_accuracy=0.87")
    final = {m["MetricName"]: m["Value"] for m in p.final()}
    assert final == {"train:loss": 0.3, "train:accuracy": 0.9, "validation:loss": 0.4,
                     "validation:accuracy": 0.88, "test:accuracy": 0.87}
    assert [pt.value for pt in p.series["train:loss"]] == [0.9, 0.3]
    assert all(m["Timestamp"] for m in p.final())


def test_unparseable_values_are_ignored():
    p = MetricParser([{"Name": "loss", "Regex": r"loss=([0-9.eE+-]+)"}])
    assert p.feed("loss=1.2.3") == []
    assert p.feed("loss=-") == []
    assert p.feed("loss=1e-3") == [("loss", 0.001)]
    assert p.final()[0]["Value"] == 0.001


def test_metric_never_seen_is_not_in_final():
    p = MetricParser(DEFS)
    p.feed("test_loss=0.5 test_accuracy=0.9")
    assert [m["MetricName"] for m in p.final()] == ["test:accuracy"]


@pytest.mark.parametrize("definition, text", [
    ({"Name": "x", "Regex": "x=[0-9]+"}, "capture group"),
    ({"Name": "x", "Regex": "x=([0-9]+"}, "not a regular expression"),
    ({"Regex": "x=([0-9]+)"}, "Name and a Regex"),
])
def test_bad_definitions_are_reported_with_the_field(definition, text):
    with pytest.raises(ConfigError, match=text):
        MetricParser([definition])
