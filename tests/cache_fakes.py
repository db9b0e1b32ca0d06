"""Stand-in cacheable step kinds for tests/harness/test_step_cache.py: ``copy`` reads an
input file (and a "script" file, its code) and writes an output folder; ``sum`` reads that
folder. Each records its runs in ``RUNS``."""
import json
from pathlib import Path

from harness import uris
from harness.stages import StageRunner
from harness.steps.base import Step
from harness.workflow import run_path

RUNS: list[str] = []


class Copy(Step):
    kind = "test-copy"
    cacheable = True
    local_runner = "cache_fakes:CopyRunner"

    def __init__(self, state_id, *, source, script, factor):
        super().__init__(state_id)
        self.source, self.script, self.factor = source, script, factor

    def request(self, ctx):
        return {"Source": uris.file_uri(self.source), "Factor": self.factor,
                "OutputUri": run_path("copied")}

    def cache_inputs(self, request):
        return [Path(self.script)]


class CopyRunner(StageRunner):
    def run(self, request, ctx):
        RUNS.append(ctx.step)
        out = uris.local_path(request["OutputUri"])
        out.mkdir(parents=True)
        value = float(uris.local_path(request["Source"]).read_text()) * request["Factor"]
        (out / "value.txt").write_text(str(value))
        return {"Folder": request["OutputUri"]}


class Sum(Step):
    kind = "test-sum"
    cacheable = True
    local_runner = "cache_fakes:SumRunner"

    def __init__(self, state_id, *, folder):
        super().__init__(state_id)
        self.folder = folder

    def request(self, ctx):
        return {"Folder": self.folder, "JsonUri": run_path("result", "r.json")}


class SumRunner(StageRunner):
    def run(self, request, ctx):
        RUNS.append(ctx.step)
        value = float((uris.local_path(request["Folder"]) / "value.txt").read_text())
        path = uris.local_path(request["JsonUri"])
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"value": value}))
        return {"JsonUri": request["JsonUri"]}
