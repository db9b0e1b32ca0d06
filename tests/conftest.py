import os
import signal
import sys
from pathlib import Path

import pytest

# The tests import their helper modules by plain name (``import support``,
# ``emulator_support``, ``executor_fakes``, ``cloud_support``); pytest runs in importlib
# mode (pyproject.toml), which does not touch sys.path, so the folders holding helpers
# are put on it here, once.
_TESTS = Path(__file__).resolve().parent
for _folder in [_TESTS, *sorted({p.parent for p in _TESTS.rglob("*_support.py")} - {_TESTS})]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

# Keep TensorFlow's C++ start-up chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The Ctrl-C tests press Ctrl-C as a terminal does, on this process or on a `harness run`
# it starts. A suite started in the background by a script (`.ci/run &`, nohup) inherits
# SIGINT *ignored*: Python then installs no KeyboardInterrupt handler, the children
# inherit the ignore across exec, and those Ctrl-Cs are lost (the run goes on to the end).
# The suite runs as in a terminal: SIGINT raises KeyboardInterrupt here and in children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny real SavedModel (``<dir>/1/``) for the serving tests, one per test module;
    a module that needs other weights defines its own ``model_dir``."""
    from support import save_tiny_model

    d = tmp_path_factory.mktemp("model")
    save_tiny_model(d)
    return d


@pytest.fixture(scope="module")
def server(model_dir):
    """The embedded model server on ``model_dir`` as "tiny", for the module's tests."""
    from local_runners.model_server import ModelServer

    with ModelServer(model_dir, "tiny") as srv:
        yield srv


# Parallel runs (`make test` runs pytest-xdist with --dist loadgroup): a module's tests
# stay on one worker, so a module-scoped fixture (a trained model, a server, an emulator
# run) is built once; tests that share a session fixture name their group with
# ``pytest.mark.xdist_group("...")`` (the session's default pipeline run: "default_run").
#
# The longest groups go first: xdist deals the first quarter of the groups round-robin
# and the rest on demand, so whole pipelines (tests/e2e, tests/examples: minutes each)
# start early on both workers and the short modules fill in at the end, instead of one
# worker finishing a three-minute demo alone. The order is the same on every worker.
def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def _weight(item) -> int:
    if _module(item).startswith(("tests/e2e/", "tests/examples/")):
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    if getattr(config.option, "loadgroup", False):
        # a module's items stay together (sort is stable): its weight is its heaviest
        weight: dict[str, int] = {}
        for item in items:
            weight[_module(item)] = min(weight.get(_module(item), 2), _weight(item))
        items.sort(key=lambda item: weight[_module(item)])
