"""`harness serve` and `harness predict` as a user runs them."""
import signal
import subprocess
import sys

import numpy as np
import pytest
from support import (
    D,
    free_port,
    in_process,
    predicted_classes,
    save_tiny_model,
    wait_until_answering,
)

from harness.config import PROJECT_ROOT


@pytest.mark.slow
def test_serve_a_model_dir_and_predict_npy_images(tmp_path):
    save_tiny_model(tmp_path / "model", seed=5)
    x = np.random.default_rng(0).random((3, D), dtype=np.float32)
    np.save(tmp_path / "images.npy", x)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve",
                               str(tmp_path / "model"), "--port", str(port),
                               "--model-name", "tiny"], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", server)
        out = subprocess.run([sys.executable, "-m", "harness.cli", "predict",
                              str(tmp_path / "images.npy"), "--url",
                              f"http://127.0.0.1:{port}", "--model-name", "tiny"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        expected = in_process(tmp_path / "model" / "1", x)["classes"].tolist()
        assert predicted_classes(out.stdout) == expected
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


def test_serve_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "serve", str(tmp_path / "empty"),
                          "--runs-dir", str(tmp_path / "runs")], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "no servable SavedModel version found" in " ".join(out.stdout.split())
