"""The awsglue compatibility layer's DynamicFrame and transforms on real local Spark,
checked against what AWS documents for each (ApplyMapping keeps only the mapped fields,
DropNullFields drops the fields null in every record, ResolveChoice cast:<type>, ...)."""
from __future__ import annotations

import pytest

from harness.config import load_config
from local_runners.glue_compat import GlueCompatUnsupported, installed
from local_runners.spark_session import get_spark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    return get_spark(load_config())


@pytest.fixture
def glue(spark):
    """(GlueContext, awsglue.transforms, DynamicFrame) while the layer is installed."""
    with installed(spark):
        from awsglue.context import GlueContext
        from awsglue.dynamicframe import DynamicFrame
        import awsglue.transforms as transforms
        yield GlueContext(spark.sparkContext), transforms, DynamicFrame


@pytest.fixture
def people(spark, glue):
    ctx, _, DynamicFrame = glue
    df = spark.createDataFrame(
        [("1", "ann", "35", None, 1.5), ("2", "bob", "70", None, 2.5),
         ("3", "cy", "x", None, None)],
        "id string, name string, age string, nothing string, score double")
    return DynamicFrame.fromDF(df, ctx, "people")


def rows(frame) -> list[tuple]:
    return sorted(tuple(r) for r in frame.toDF().collect())


def test_apply_mapping_casts_renames_and_drops_unmapped(people):
    out = people.apply_mapping([("id", "string", "person_id", "long"),
                                ("age", "string", "age", "int")])
    assert out.toDF().columns == ["person_id", "age"]  # name, nothing, score dropped
    assert [f.dataType.simpleString() for f in out.toDF().schema] == ["bigint", "int"]
    assert rows(out) == [(1, 35), (2, 70), (3, None)]  # an uncastable value becomes null


def test_apply_mapping_transform_and_missing_source(people, glue, caplog):
    _, t, _ = glue
    out = t.ApplyMapping.apply(frame=people, mappings=[("name", "string", "who", "string"),
                                                       ("absent", "string", "x", "int")])
    assert out.toDF().columns == ["who"]
    assert "has no field 'absent'" in caplog.text


def test_apply_mapping_nested_source_and_backticks(spark, glue):
    ctx, _, DynamicFrame = glue
    df = spark.sql("select named_struct('zip', '123') as address, 7 as `a.b`")
    out = DynamicFrame.fromDF(df, ctx, "n").apply_mapping(
        [("address.zip", "string", "zip", "int"), ("`a.b`", "int", "ab", "long")])
    assert rows(out) == [(123, 7)]


def test_drop_and_select_fields(people, glue):
    _, t, _ = glue
    assert people.drop_fields(["nothing", "score"]).toDF().columns == ["id", "name", "age"]
    assert t.DropFields.apply(frame=people, paths=["age"]).toDF().columns == \
        ["id", "name", "nothing", "score"]
    assert people.select_fields(["name", "id"]).toDF().columns == ["name", "id"]
    assert t.SelectFields.apply(frame=people, paths=["score", "absent"]).toDF().columns == \
        ["score"]
    assert t.RenameField.apply(frame=people, old_name="name", new_name="n").toDF().columns[1] \
        == "n"


def test_filter_gets_dict_records(people, glue):
    _, t, _ = glue
    old = people.filter(lambda rec: rec["age"].isdigit() and int(rec["age"]) > 65)
    assert [r.name for r in old.toDF().collect()] == ["bob"]
    assert t.Filter.apply(frame=people, f=lambda r: r["score"] is None).count() == 1
    assert old.toDF().schema == people.toDF().schema


def test_map_receives_and_returns_records(people, glue):
    _, t, _ = glue

    def merge(rec):
        rec["label"] = f"{rec['id']}:{rec['name']}"
        rec["double_score"] = (rec["score"] or 0) * 2
        del rec["nothing"]
        return rec

    out = t.Map.apply(frame=people, f=merge)
    df = out.toDF()
    assert df.columns == ["id", "name", "age", "score", "label", "double_score"]
    assert sorted((r.label, r.double_score) for r in df.collect()) == \
        [("1:ann", 3.0), ("2:bob", 5.0), ("3:cy", 0)]
    assert people.map(lambda r: r).toDF().schema["nothing"].dataType.simpleString() == "string"


def test_drop_null_fields_drops_only_all_null_fields(people, glue):
    _, t, _ = glue
    out = t.DropNullFields.apply(frame=people)
    assert out.toDF().columns == ["id", "name", "age", "score"]  # score has one null only


def test_resolve_choice_cast_and_project(people, glue):
    _, t, _ = glue
    out = t.ResolveChoice.apply(frame=people, specs=[("age", "cast:int"),
                                                     ("id", "project:long")])
    schema = {f.name: f.dataType.simpleString() for f in out.toDF().schema}
    assert schema["age"] == "int" and schema["id"] == "bigint"
    assert sorted(r.age for r in out.toDF().collect() if r.age is not None) == [35, 70]
    assert people.resolveChoice(choice="make_cols").toDF().columns == people.toDF().columns
    with pytest.raises(GlueCompatUnsupported, match="ResolveChoice spec 'make_struct'"):
        people.resolveChoice(specs=[("age", "make_struct")])
    with pytest.raises(Exception, match="both specified"):
        people.resolveChoice(specs=[("age", "cast:int")], choice="make_cols")


def test_count_print_schema_and_show(people, capsys):
    assert people.count() == 3
    people.printSchema()
    assert capsys.readouterr().out == ("root\n|-- id: string\n|-- name: string\n"
                                       "|-- age: string\n|-- nothing: string\n"
                                       "|-- score: double\n")
    people.show(1)
    assert capsys.readouterr().out.startswith('{"id": ')


def test_print_schema_nested(spark, glue, capsys):
    ctx, _, DynamicFrame = glue
    df = spark.sql("select array(named_struct('note', 'x')) as links, 1L as n")
    DynamicFrame.fromDF(df, ctx, "n").printSchema()
    assert capsys.readouterr().out == ("root\n|-- links: array\n|    |-- element: struct\n"
                                       "|    |    |-- note: string\n|-- n: long\n")


def test_repartition_and_coalesce(people, glue):
    _, t, _ = glue
    assert people.repartition(3).getNumPartitions() == 3
    assert people.repartition(3).coalesce(1).getNumPartitions() == 1
    assert t.Repartition.apply(frame=people, num_partitions=2).getNumPartitions() == 2


def test_unsupported_transform_and_method_name_the_call(people, glue):
    _, t, _ = glue
    with pytest.raises(GlueCompatUnsupported) as e:
        t.Relationalize.apply(frame=people, staging_path="/tmp/x")
    assert "awsglue.transforms.Relationalize is not supported locally" in str(e.value)
    assert "etl.runner: glue-container" in str(e.value)
    with pytest.raises(GlueCompatUnsupported, match="DynamicFrame.unnest is not supported"):
        people.unnest()
    with pytest.raises(GlueCompatUnsupported, match="awsglue.transforms.NoSuchThing"):
        t.NoSuchThing
