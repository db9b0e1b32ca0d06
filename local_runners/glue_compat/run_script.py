"""``python -m local_runners.glue_compat.run_script SCRIPT [ARGS...]``: run a Glue job script
as ``__main__`` with ``sys.argv = [SCRIPT, ARGS...]``, as ``spark-submit SCRIPT ARGS...``
does in AWS's Glue image.

A script that imports pyspark, or awsglue's GlueContext, Job, DynamicFrame or transforms,
finds the project's local SparkSession started (its ``getOrCreate()`` picks it up); with
the awsglue classes it runs with the compatibility layer installed over that session. A
script that imports neither runs without Spark. An uncaught exception prints its
traceback and exits with code 1, as spark-submit does.
The test double of the Glue image (tests/fake_docker_engine.py) runs scripts this way.
"""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m local_runners.glue_compat.run_script SCRIPT "
                         "[ARGS...]")
    script = Path(argv[0])
    source = script.read_text(encoding="utf-8", errors="replace")
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))
    from local_runners import glue_compat

    uses_spark = re.search(r"^\s*(from|import)\s+pyspark\b", source, re.MULTILINE)
    if not uses_spark and not glue_compat.uses_glue_api(source):
        runpy.run_path(str(script), run_name="__main__")
        return
    from harness.config import load_config
    from local_runners.spark_session import get_spark

    spark = get_spark(load_config())
    if not glue_compat.uses_glue_api(source):
        runpy.run_path(str(script), run_name="__main__")
        return
    with glue_compat.installed(spark) as rt:
        runpy.run_path(str(script), run_name="__main__")
    if rt.commits == 0:
        print(f"{script.name} never called job.commit()", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
