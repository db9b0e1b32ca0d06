"""The training script's hyperparameters and their rules, without TensorFlow: train.py
parses its arguments with them, and the harness checks a run's values with the same rules
before the first step (a bad value fails in a second, not after the ETL)."""
from __future__ import annotations

import argparse
from typing import Any

POSITIVE_INTEGERS = ("epochs", "batch_size", "image_height", "image_width", "num_classes",
                     "units")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=0.003)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--image_height", type=int, default=28)
    p.add_argument("--image_width", type=int, default=28)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--shift", type=float, default=0.1,
                   help="random translation (fraction of the image) applied while training")
    p.add_argument("--dropout", type=float, default=0.3,
                   help="dropout rate before the dense layer (training only)")
    p.add_argument("--units", type=int, default=128, help="width of the dense layer")
    # SageMaker passes every trial of a tuning job the name of the objective metric
    p.add_argument("--_tuning_objective_metric", default=None, help=argparse.SUPPRESS)


def problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with parsed values, one sentence each (empty when all is well)."""
    out = [f"--{name} must be a positive integer, got {getattr(args, name)}"
           for name in POSITIVE_INTEGERS if getattr(args, name) < 1]
    if not args.learning_rate > 0:
        out.append(f"--learning_rate must be > 0, got {args.learning_rate}")
    if not 0 <= args.shift < 1:
        out.append(f"--shift must be in [0, 1), got {args.shift}")
    if not 0 <= args.dropout < 1:
        out.append(f"--dropout must be in [0, 1), got {args.dropout}")
    return out


def check(hyperparameters: dict[str, Any]) -> list[str]:
    """The problems of a hyperparameter mapping as SageMaker passes it (``--key value``);
    placeholders (values known only during the run) are skipped."""
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_arguments(p)
    known = {a.dest for a in p._actions}
    out, argv = [], []
    for key, value in hyperparameters.items():
        if key not in known:
            out.append(f"--{key} is not an argument of the training script "
                       f"(known: {', '.join(sorted(known))})")
        elif "⟦" not in str(value):
            argv += [f"--{key}", str(value)]
    try:
        out += problems(p.parse_args(argv))
    except argparse.ArgumentError as e:
        out.append(str(e))
    return out
