"""UploadStep: local sources for the jobs; nothing moves locally, a missing source or a bad
name is a clear error (the emulator upload: tests/harness/test_monitor_pipeline.py)."""
from __future__ import annotations

import pytest
from pipeline_support import pipeline, stage_context

from harness import uris
from harness.errors import ConfigError, DataError
from harness.steps import UploadStep
from local_runners.upload import LocalUploadRunner


def test_locally_the_sources_are_read_where_they_are(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    cfg, _ = pipeline(runs_dir=str(tmp_path / "runs"))
    request = {"Sources": {"f": uris.file_uri(tmp_path / "f.txt"), "s": "s3://b/k"},
               "OutputUri": uris.file_uri(tmp_path / "out")}
    out = LocalUploadRunner().run(request, stage_context(cfg, "stage"))
    assert out == {"Uris": request["Sources"]}
    request["Sources"]["gone"] = uris.file_uri(tmp_path / "gone")
    with pytest.raises(DataError, match="source 'gone' not found"):
        LocalUploadRunner().run(request, stage_context(cfg, "stage"))


@pytest.mark.parametrize("sources,field", [
    ({}, "up.sources"), ({"../x": "file:///x"}, "up.sources"),
    ({"x": "/plain/path"}, "up.sources.x")])
def test_bad_sources_are_refused_when_the_step_is_made(sources, field):
    with pytest.raises(ConfigError) as e:
        UploadStep("up", sources=sources, output_uri="s3://b/p")
    assert e.value.field == field
    with pytest.raises(ConfigError):
        UploadStep("up", sources={"a": "s3://b/k"}, output_uri="s3://b/p").uri("b")
