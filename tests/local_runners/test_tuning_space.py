"""A tuning request's ParameterRanges and strategy in Optuna's terms (no trials run)."""
import optuna
import pytest

from harness.errors import HarnessError
from harness.steps.tuning import (CategoricalParameter, ContinuousParameter, IntegerParameter,
                                  checked_ranges)
from local_runners.tuning_space import search_space, strategy


def config(ranges, **kw):
    out = {"Strategy": "Bayesian", "ResourceLimits": {"MaxNumberOfTrainingJobs": 8,
                                                      "MaxParallelTrainingJobs": 2},
           "ParameterRanges": checked_ranges(ranges, "tune.parameter_ranges"),
           "TrainingJobEarlyStoppingType": "Off", "RandomSeed": 1}
    out.update(kw)
    return out


def samples(ranges, n=300, **kw):
    space = search_space(config(ranges, **kw))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append({r.name: r.suggest(trial) for r in space})
        study.tell(trial, 0.0)
    return out


def test_auto_scaling_is_logarithmic_from_two_orders_of_magnitude_on():
    space = {r.name: r.scale for r in search_space(config({
        "lr": ContinuousParameter(1e-4, 1e-1), "batch": IntegerParameter(32, 256),
        "wide": IntegerParameter(1, 100), "from_zero": ContinuousParameter(0.0, 1000.0),
        "fixed": ContinuousParameter(0.5, 0.9, "Logarithmic")}))}
    assert space == {"lr": "Logarithmic", "batch": "Linear", "wide": "Logarithmic",
                     "from_zero": "Linear", "fixed": "Logarithmic"}


def test_values_are_strings_within_the_ranges_on_their_scales():
    got = samples({"lr": ContinuousParameter(1e-4, 1e-1, "Logarithmic"),
                   "batch": IntegerParameter(32, 256, "Linear"),
                   "momentum": ContinuousParameter(0.9, 0.999, "ReverseLogarithmic"),
                   "opt": CategoricalParameter(["sgd", "adam", True])})
    lr = [float(s["lr"]) for s in got]
    batch = [int(s["batch"]) for s in got]
    momentum = [float(s["momentum"]) for s in got]
    assert all(isinstance(v, str) for s in got for v in s.values())
    assert min(lr) >= 1e-4 and max(lr) <= 1e-1 and min(batch) >= 32 and max(batch) <= 256
    assert 0.9 <= min(momentum) and max(momentum) <= 0.999
    # the request's categorical values, verbatim: JSON-encoded as the SDK sends them
    assert {s["opt"] for s in got} == {'"sgd"', '"adam"', '"True"'}
    # log scale: each decade equally likely (a linear scale puts 90 % in the top one)
    assert 0.2 < sum(v < 1e-3 for v in lr) / len(lr) < 0.45
    # reverse log: 1 - x log-uniform in [0.001, 0.1], so half of x lies above 0.99
    assert 0.35 < sum(v > 0.99 for v in momentum) / len(momentum) < 0.65


@pytest.mark.parametrize("name, sampler, pruner", [
    ("Bayesian", optuna.samplers.TPESampler, optuna.pruners.NopPruner),
    ("Random", optuna.samplers.RandomSampler, optuna.pruners.NopPruner),
    ("Hyperband", optuna.samplers.RandomSampler, optuna.pruners.HyperbandPruner),
])
def test_each_strategy_has_its_sampler_and_pruner(name, sampler, pruner):
    ranges = {"lr": ContinuousParameter(1e-4, 1e-1)}
    cfg = config(ranges, Strategy=name)
    if name == "Hyperband":
        del cfg["TrainingJobEarlyStoppingType"]
    plan = strategy(cfg, search_space(cfg), epochs=6)
    assert isinstance(plan.sampler, sampler) and isinstance(plan.pruner, pruner)
    assert plan.trials == 8 and plan.prunes == (name == "Hyperband")


def test_early_stopping_auto_is_a_median_pruner_after_a_quarter_of_the_trials():
    for jobs, startup in ((4, 2), (8, 2), (12, 3), (40, 5)):
        cfg = config({"lr": ContinuousParameter(1e-4, 1e-1)},
                     TrainingJobEarlyStoppingType="Auto",
                     ResourceLimits={"MaxNumberOfTrainingJobs": jobs,
                                     "MaxParallelTrainingJobs": 1})
        plan = strategy(cfg, search_space(cfg), epochs=6)
        assert isinstance(plan.pruner, optuna.pruners.MedianPruner) and plan.prunes
        assert plan.pruner._n_startup_trials == startup and plan.pruner._n_warmup_steps == 2


def test_grid_runs_at_most_the_grid():
    cfg = config({"a": CategoricalParameter([1, 2, 3]), "b": CategoricalParameter(["x", "y"])},
                 Strategy="Grid", ResourceLimits={"MaxNumberOfTrainingJobs": 50,
                                                  "MaxParallelTrainingJobs": 1})
    assert strategy(cfg, search_space(cfg), epochs=None).trials == 6


@pytest.mark.parametrize("change, field", [
    (lambda c: c["ParameterRanges"]["ContinuousParameterRanges"][0].update(MinValue="low"),
     "HyperParameterTuningJobConfig.ParameterRanges.ContinuousParameterRanges[0].MinValue"),
    (lambda c: c["ParameterRanges"]["ContinuousParameterRanges"][0].update(ScalingType="Cubic"),
     "HyperParameterTuningJobConfig.ParameterRanges.ContinuousParameterRanges[0].ScalingType"),
    (lambda c: c.update(Strategy="Genetic"), "HyperParameterTuningJobConfig.Strategy"),
    (lambda c: c.update(Strategy="Grid"), "HyperParameterTuningJobConfig.ParameterRanges"),
])
def test_a_bad_request_names_its_field(change, field):
    cfg = config({"lr": ContinuousParameter(1e-4, 1e-1)})
    change(cfg)
    with pytest.raises(HarnessError) as e:
        strategy(cfg, search_space(cfg), epochs=None)
    assert e.value.field == field, e.value.message
