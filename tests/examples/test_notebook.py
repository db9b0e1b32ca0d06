"""examples/pipeline.ipynb runs top to bottom on the project's own Python (nbclient with
this venv's ipykernel): define the steps, render the graph, run locally, print the ASL,
run on the emulator, look at each step's input and output."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "pipeline.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from nbclient import NotebookClient

    monkeypatch.setenv("MLHARNESS_CACHE", str(tmp_path))  # the kernel's image-URI cache
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter (ipykernel's native spec), so it sees the project.
    client = NotebookClient(nb, timeout=900, kernel_name=NATIVE_KERNEL_NAME,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.count("SUCCEEDED") >= 2, text[-3000:]
    assert "same accuracy through both endpoints" in text
    assert "states: ['etl', 'train', 'evaluate', 'gate'" in text
    # the graph is displayed as an image, the Mermaid text printed
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs)
    assert "flowchart TD" in text
