"""The training script's hyperparameter rules, shared by the script and the harness's
check before a run (model/hyperparameters.py)."""
import pytest

from model.hyperparameters import check


def test_the_default_hyperparameters_pass():
    assert check({"epochs": 6, "batch_size": 128, "learning_rate": 0.003, "seed": 42,
                  "shift": 0.1}) == []


@pytest.mark.parametrize("hp, words", [
    ({"epochs": -1}, "--epochs must be a positive integer, got -1"),
    ({"batch_size": 0}, "--batch_size must be a positive integer"),
    ({"learning_rate": 0}, "--learning_rate must be > 0"),
    ({"shift": 1.5}, "--shift must be in [0, 1)"),
    ({"dropout": 1.0}, "--dropout must be in [0, 1)"),
    ({"units": 0}, "--units must be a positive integer"),
    ({"epochs": "six"}, "invalid int value: 'six'"),
    ({"lr": 0.1}, "--lr is not an argument of the training script"),
])
def test_a_bad_value_is_named_with_the_rule_it_breaks(hp, words):
    problems = check(hp)
    assert len(problems) == 1 and words in problems[0], problems


def test_values_known_only_during_the_run_are_not_checked():
    assert check({"image_height": "⟦$.Prepare.ImageHeight⟧", "epochs": 2}) == []


def test_the_training_script_refuses_the_same_values(tmp_path, capsys):
    from model.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--epochs", "-1", "--train", str(tmp_path), "--sm_model_dir",
                    str(tmp_path)])
    assert "--epochs must be a positive integer, got -1" in capsys.readouterr().err


def test_units_and_dropout_shape_the_network():
    from model.network import build_model, classifier_of

    model = classifier_of(build_model(28, 28, 10, units=32, dropout=0.5))
    assert model.get_layer("dense").units == 32
    assert model.get_layer("dropout").rate == 0.5
