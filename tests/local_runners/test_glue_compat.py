"""The awsglue compatibility layer on real local Spark: GlueContext reads and writes
(csv/json/parquet, as AWS documents the format options), the local catalog, Job,
unsupported calls, the sys.modules swap, and whole Glue-style scripts run by
LocalEtlRunner (runner selection, failures, job.commit())."""
from __future__ import annotations

import csv
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
from harness.stages import GLUE_JOBS
from pipeline_support import stage_context

from harness import uris
from harness.config import PROJECT_ROOT, load_config
from harness.errors import StepFailed
from local_runners.etl import LocalEtlRunner, select_runner
from local_runners.glue_compat import (GlueCompatError, GlueCompatUnsupported, installed,
                                       uses_glue_api)
from local_runners.spark_session import get_spark

pytestmark = pytest.mark.slow
CFG = load_config()


@pytest.fixture(scope="module")
def spark():
    return get_spark(CFG)


@pytest.fixture
def glue(spark):
    with installed(spark) as rt:
        from awsglue.context import GlueContext
        yield GlueContext(spark.sparkContext), rt


def read_opts(path, fmt, **format_options):
    return dict(connection_type="s3", connection_options={"paths": [str(path)]},
                format=fmt, format_options=format_options)


# -- reading ------------------------------------------------------------------------------

def test_csv_without_header_names_columns_col0(glue, tmp_path):
    ctx, _ = glue
    (tmp_path / "in.csv").write_text("1,ann,2.5\n2,bob,3.5\n")
    dyf = ctx.create_dynamic_frame.from_options(**read_opts(tmp_path / "in.csv", "csv"))
    df = dyf.toDF()
    assert df.columns == ["col0", "col1", "col2"]
    assert sorted(tuple(r) for r in df.collect()) == [(1, "ann", 2.5), (2, "bob", 3.5)]


def test_csv_with_header_separator_and_quote(glue, tmp_path):
    ctx, _ = glue
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id;name\n1;'x;y'\n")
    dyf = ctx.create_dynamic_frame.from_options(**read_opts(
        uris.file_uri(tmp_path / "in"), "csv", withHeader=True, separator=";", quoteChar="'"))
    assert [tuple(r) for r in dyf.toDF().collect()] == [(1, "x;y")]
    assert dyf.toDF().columns == ["id", "name"]


def test_json_and_parquet(glue, spark, tmp_path):
    ctx, _ = glue
    (tmp_path / "j.json").write_text('{"a": 1, "b": "x"}\n{"a": 2}\n')
    dyf = ctx.create_dynamic_frame.from_options(**read_opts(tmp_path / "j.json", "json"))
    assert sorted((r.a, r.b) for r in dyf.toDF().collect()) == [(1, "x"), (2, None)]
    spark.createDataFrame([(1, 0.5)], "k int, v double").write.parquet(str(tmp_path / "p"))
    pq = ctx.create_dynamic_frame.from_options(**read_opts(tmp_path / "p", "parquet"))
    assert [tuple(r) for r in pq.toDF().collect()] == [(1, 0.5)]
    df = ctx.create_data_frame.from_options(**read_opts(tmp_path / "p", "parquet"))
    assert df.count() == 1 and type(df).__name__ == "DataFrame"


def test_catalog_file(glue, tmp_path, monkeypatch):
    ctx, _ = glue
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("n,v\n1,2\n")
    cat = tmp_path / "catalog.yaml"
    cat.write_text("db.things:\n  location: data\n  format: csv\n"
                   "  format_options: {withHeader: true}\n")
    monkeypatch.setenv("MLHARNESS_GLUE_CATALOG", str(cat))
    dyf = ctx.create_dynamic_frame.from_catalog(database="db", table_name="things")
    assert [tuple(r) for r in dyf.toDF().collect()] == [(1, 2)]
    with pytest.raises(GlueCompatError, match="db.other is not in the local catalog"):
        ctx.create_dynamic_frame.from_catalog(database="db", table_name="other")


def test_s3_paths_need_a_resolver(glue):
    ctx, _ = glue
    with pytest.raises(GlueCompatError) as e:
        ctx.create_dynamic_frame.from_options(**read_opts("s3://bucket/raw/", "csv"))
    assert "s3:// paths need the emulator or cloud backend: s3://bucket/raw/" in str(e.value)


# -- writing ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_write_and_read_back(glue, spark, tmp_path, fmt):
    ctx, _ = glue
    from awsglue.dynamicframe import DynamicFrame
    df = spark.createDataFrame([(1, "a"), (2, "b")], "id int, name string")
    out = tmp_path / "out"
    ctx.write_dynamic_frame.from_options(frame=DynamicFrame.fromDF(df, ctx, "x"),
                                         connection_type="s3", format=fmt,
                                         connection_options={"path": str(out)})
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    back = ctx.create_dynamic_frame.from_options(**read_opts(
        out, fmt, **({"withHeader": True} if fmt == "csv" else {})))
    assert sorted((r.id, r.name) for r in back.toDF().collect()) == [(1, "a"), (2, "b")]
    if fmt == "csv":  # Glue writes a header line by default (writeHeader)
        first = next(out.glob("part-*.csv")).read_text().splitlines()[0]
        assert first == "id,name"


def test_sink_and_existing_output(glue, spark, tmp_path):
    ctx, _ = glue
    from awsglue.dynamicframe import DynamicFrame
    dyf = DynamicFrame.fromDF(spark.createDataFrame([(1,)], "n int"), ctx, "x")
    sink = ctx.getSink(connection_type="s3", path=str(tmp_path / "s"), partitionKeys=["n"])
    sink.setFormat("json")
    sink.writeFrame(DynamicFrame.fromDF(spark.createDataFrame([(1, "a")], "n int, v string"),
                                        ctx, "y"))
    assert json.loads(next((tmp_path / "s" / "n=1").glob("part-*.json")).read_text()) == \
        {"v": "a"}
    with pytest.raises(GlueCompatError, match="already exists"):
        ctx.write_dynamic_frame.from_options(frame=dyf, connection_type="s3", format="csv",
                                             connection_options={"path": str(tmp_path / "s")})


def test_failed_write_leaves_nothing(glue, spark, tmp_path):
    ctx, _ = glue
    df = spark.createDataFrame([(1,)], "n int")
    with pytest.raises(Exception):
        ctx.write_dynamic_frame.from_options(
            frame=df, connection_type="s3", format="parquet",
            connection_options={"path": str(tmp_path / "o"), "partitionKeys": ["missing"]})
    assert list(tmp_path.iterdir()) == []


# -- Job, logger, unsupported calls, installation --------------------------------------

def test_job_init_commit_and_logger(glue, caplog):
    ctx, rt = glue
    from awsglue.job import Job
    job = Job(ctx)
    with caplog.at_level(logging.INFO, logger=rt.log.name):
        job.init("j", {"JOB_NAME": "j"})
        ctx.get_logger().info("hello from the script")
        job.commit()
    assert job.isInitialized() and rt.commits == 1 and rt.jobs_initialised == ["j"]
    assert "hello from the script" in caplog.text


def test_unsupported_calls_name_the_call_and_the_container(glue):
    ctx, _ = glue
    with pytest.raises(GlueCompatUnsupported) as e:
        ctx.create_dynamic_frame.from_rdd([], "x")
    msg = str(e.value)
    assert msg.startswith("awsglue compat: GlueContext.create_dynamic_frame.from_rdd is not "
                          "supported locally")
    assert "etl.runner: glue-container" in msg and "public.ecr.aws/glue/aws-glue-libs" in msg
    with pytest.raises(GlueCompatUnsupported, match="GlueContext.purge_s3_path"):
        ctx.purge_s3_path("s3://b/x", {})
    with pytest.raises(GlueCompatUnsupported, match="connection_type='jdbc'"):
        ctx.create_dynamic_frame.from_options(connection_type="jdbc", connection_options={})
    with pytest.raises(GlueCompatUnsupported, match="format='avro'"):
        ctx.create_dynamic_frame.from_options(**read_opts("/x", "avro"))
    with pytest.raises(GlueCompatUnsupported, match="awsglue.context.GlueContextX"):
        from awsglue.context import GlueContextX  # noqa: F401


def awsglue_modules() -> dict:
    return {k: v for k, v in sys.modules.items() if k == "awsglue" or k.startswith("awsglue.")}


def test_installed_swaps_and_restores_sys_modules(spark):
    import awsglue.utils  # noqa: F401 — the real package is imported once, for good
    before = awsglue_modules()
    with installed(spark):
        import awsglue.context
        assert awsglue.context.__name__ == "local_runners.glue_compat.context"
        assert sys.modules["awsglue.utils"] is before["awsglue.utils"]  # the real one
    assert awsglue_modules() == before
    with pytest.raises(KeyError):
        with installed(spark):
            raise KeyError("boom")
    assert awsglue_modules() == before
    with pytest.raises(KeyboardInterrupt):
        with installed(spark):
            raise KeyboardInterrupt
    assert awsglue_modules() == before
    with pytest.raises(GlueCompatError, match="not installed"):
        from local_runners.glue_compat.context import GlueContext
        GlueContext(spark.sparkContext)


# -- whole scripts through LocalEtlRunner ------------------------------------------------

WALKTHROUGH = textwrap.dedent("""
    import sys
    from awsglue.utils import getResolvedOptions
    from pyspark.context import SparkContext
    from pyspark.sql import functions as F
    from awsglue.context import GlueContext
    from awsglue.dynamicframe import DynamicFrame
    from awsglue.job import Job
    from awsglue.transforms import *

    args = getResolvedOptions(sys.argv, ['JOB_NAME', 'SOURCE_PATH', 'OUTPUT_PATH'])
    sc = SparkContext.getOrCreate()
    glueContext = GlueContext(sc)
    spark = glueContext.spark_session
    job = Job(glueContext)
    job.init(args['JOB_NAME'], args)
    dyf = glueContext.create_dynamic_frame.from_options(
        connection_type="s3", connection_options={"paths": [args['SOURCE_PATH']]},
        format="csv", format_options={"withHeader": False})
    dyf.printSchema()
    df = dyf.toDF()
    label, *features = df.columns
    df = df.select(F.col(label).cast("int").alias("label"),
                   *[(F.col(c) / 255.0).alias(c) for c in features])
    out = DynamicFrame.fromDF(df, glueContext, "normalised")
    glueContext.write_dynamic_frame.from_options(
        frame=out, connection_type="s3", connection_options={"path": args['OUTPUT_PATH']},
        format="csv")
    COMMIT
""")


def run_script(tmp_path: Path, source: str, arguments: dict, cfg=CFG):
    script = tmp_path / "job.py"
    script.write_text(source)
    job = {"Name": "walkthrough", "Command": {"Name": "glueetl",
                                              "ScriptLocation": uris.file_uri(script)},
           "DefaultArguments": {"--enable-metrics": "true"}, "GlueVersion": "5.1"}
    ctx = stage_context(cfg, "etl", registry={GLUE_JOBS: {"walkthrough": job}})
    return LocalEtlRunner().run({"JobName": "walkthrough", "Arguments": arguments}, ctx), ctx


def test_walkthrough_script_end_to_end(spark, tmp_path, caplog):
    pixels = [[(r * 31 + c * 7) % 256 for c in range(784)] for r in range(4)]
    src = tmp_path / "raw.csv"
    src.write_text("".join(",".join(map(str, [r % 10, *p])) + "\n"
                           for r, p in enumerate(pixels)))
    out = tmp_path / "processed"
    args = {"--SOURCE_PATH": str(src), "--OUTPUT_PATH": uris.file_uri(out)}
    with caplog.at_level(logging.INFO):
        result, _ = run_script(tmp_path, WALKTHROUGH.replace("COMMIT", "job.commit()"), args)
    assert result["JobRunState"] == "SUCCEEDED" and result["Report"] == {}
    assert result["Arguments"] == args and "OutputUri" not in result
    assert result["Id"].startswith("jr_") and result["GlueVersion"] == "5.1"
    assert "runner glue-compat" in caplog.text and "|-- col784: int" in caplog.text
    assert "never called job.commit()" not in caplog.text
    lines = [row for part in sorted(out.glob("part-*.csv"))
             for row in list(csv.reader(part.open()))[1:]]
    got = sorted((int(row[0]), [float(v) for v in row[1:]]) for row in lines)
    assert len(got) == 4
    for (label, values), (r, p) in zip(got, sorted(enumerate(pixels), key=lambda x: x[0] % 10)):
        assert label == r % 10 and values == pytest.approx([v / 255 for v in p])


def test_auto_runner_selection(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(WALKTHROUGH)
    assert select_runner("auto", script) == "glue-compat"
    assert select_runner("auto", PROJECT_ROOT / "glue_etl" / "mnist_etl.py") == "spark"
    assert select_runner("spark", script) == "spark"
    assert uses_glue_api("import awsglue.job\n") and uses_glue_api("from awsglue import "
                                                                    "DynamicFrame\n")
    assert not uses_glue_api("s = 'from awsglue.context import GlueContext'\n")
    assert not uses_glue_api("from awsglue.utils import getResolvedOptions\n")
    assert not uses_glue_api("try:\n    from awsglue.job import Job\nexcept ImportError:\n"
                             "    Job = None\n")
    assert uses_glue_api("def main():\n    from awsglue.job import Job\n")


def test_failing_script_and_missing_commit(spark, tmp_path, caplog):
    failing = WALKTHROUGH.split("dyf = ")[0] + \
        "raise ValueError('no rows for ' + args['SOURCE_PATH'] + '\\nsecond line')\n"
    with caplog.at_level(logging.INFO):
        with pytest.raises(StepFailed) as e:
            run_script(tmp_path, failing, {"--SOURCE_PATH": "in", "--OUTPUT_PATH": "out"})
    assert "the Glue script job.py failed: ValueError: no rows for in" in str(e.value)
    assert "second line" not in str(e.value)
    assert "Traceback" in caplog.text and "raise ValueError" in caplog.text
    caplog.clear()
    src = tmp_path / "raw.csv"
    src.write_text("1,255\n")
    with caplog.at_level(logging.INFO):
        run_script(tmp_path, WALKTHROUGH.replace("COMMIT", ""),
                   {"--SOURCE_PATH": str(src), "--OUTPUT_PATH": str(tmp_path / "o"),
                    "--job-bookmark-option": "job-bookmark-enable"})
    assert "job.py never called job.commit()" in caplog.text
    assert "job bookmarks are not kept locally" in caplog.text
    shim = sys.modules.get("awsglue.context")  # restored after the run
    assert shim is None or shim.__name__ != "local_runners.glue_compat.context"


def test_glue_container_runner_needs_a_docker_engine(tmp_path, monkeypatch):
    """etl.runner: glue-container runs the script in AWS's Glue image (tests/local_runners/
    test_glue_container.py); with no engine it says so, as the TF Serving container does."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    cfg = load_config(overrides={"etl.runner": "glue-container"})
    with pytest.raises(StepFailed, match="no Docker engine answers"):
        run_script(tmp_path, WALKTHROUGH, {}, cfg=cfg)
