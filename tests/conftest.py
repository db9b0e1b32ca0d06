import os

import pytest

# Keep TensorFlow's C++ start-up chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
