"""Categorical ranges as the SageMaker SDK sends them and as a trial's script gets them.

The SDK's HyperparameterTuner sends a Framework estimator's categorical values
JSON-encoded (``CategoricalParameter.as_json_range``: ``'"relu"'``), its integer and
continuous bounds plain; SageMaker passes a trial the chosen text verbatim, and the
training toolkit ``json.loads`` it before the script sees it (``relu``). No trial runs
here: the request, the local tuner's choice, the trial's CreateTrainingJob request and
the toolkit's decoding, arguments and ``SM_HP_*`` variables are checked in one chain."""
import argparse
import json
from pathlib import Path

import optuna

from harness.steps.tuning import (CategoricalParameter, IntegerParameter, _short,
                                  checked_ranges)
from local_runners import train_process as tp
from local_runners.tuning_space import search_space
from local_runners.tuning_trial import describe_params, training_request
from model.hyperparameters import add_arguments

VALUES = ["relu", 32, 0.5, True]


def test_the_request_s_categorical_values_are_the_sdk_s_json_range():
    from sagemaker.core.parameter import CategoricalParameter as SdkCategorical
    from sagemaker.core.parameter import IntegerParameter as SdkInteger

    ranges = checked_ranges({"act": CategoricalParameter(VALUES),
                             "units": IntegerParameter(16, 64)}, "tune.parameter_ranges")
    assert ranges["CategoricalParameterRanges"] == [
        SdkCategorical(VALUES).as_json_range("act")]
    assert ranges["CategoricalParameterRanges"][0]["Values"] == [
        '"relu"', '"32"', '"0.5"', '"True"']
    # integer and continuous ranges are not encoded (the SDK's as_tuning_range)
    sdk = SdkInteger(16, 64).as_tuning_range("units")
    assert ranges["IntegerParameterRanges"] == [{**sdk, "ScalingType": "Auto"}]


def test_a_trial_s_script_gets_the_plain_categorical_value():
    config = {"Strategy": "Grid", "ParameterRanges": checked_ranges(
        {"activation": CategoricalParameter(["relu", "tanh"]),
         "units": CategoricalParameter([32, 64])}, "tune.parameter_ranges")}
    space = search_space(config)
    trial = optuna.trial.FixedTrial({"activation": '"relu"', "units": '"32"'})
    tuned = {r.name: r.suggest(trial) for r in space}
    assert tuned == {"activation": '"relu"', "units": '"32"'}  # SageMaker passes it verbatim
    definition = {"StaticHyperParameters": {"epochs": "2",
                                            "sagemaker_program": '"train.py"'}}
    request = training_request(definition, "t-001-abcdef12", tuned, "validation:accuracy", [])
    assert request["HyperParameters"]["activation"] == '"relu"'

    # what the local trainer does with the request: the toolkit's decoding and arguments
    user, framework = tp.split_hyperparameters(
        tp.decode_hyperparameters(request["HyperParameters"]))
    assert user["activation"] == "relu" and user["units"] == "32"  # a string, as in SageMaker
    args = tp.cmd_args(user)
    assert args[args.index("--activation") + 1] == "relu"
    assert args[args.index("--units") + 1] == "32"
    env = tp.toolkit_environment(user_hps=user, framework_hps=framework, program="train.py",
                                 module_dir=Path("/src"), channels={}, content_types={},
                                 model_dir=Path("/m"), output_data_dir=Path("/o/data"),
                                 job_name="t", instance_type="local", num_cpus=1)
    assert env["SM_HP_ACTIVATION"] == "relu" and json.loads(env["SM_HPS"])["units"] == "32"
    # the script's own parser: a categorical number is a number again
    p = argparse.ArgumentParser()
    add_arguments(p)
    p.add_argument("--activation")
    parsed = p.parse_args(args)
    assert parsed.activation == "relu" and parsed.units == 32 and parsed.epochs == 2

    # and a person reads the values as the script gets them
    assert describe_params(tuned) == "activation=relu units=32"
    assert _short('"relu"') == "relu" and _short('"0.5"') == "0.5"
