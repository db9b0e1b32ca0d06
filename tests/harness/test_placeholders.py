"""Placeholders: one request, concrete values locally, JSONPath/States.Format in the ASL."""
import pytest

from harness.errors import ConfigError, HarnessError
from harness.placeholders import (
    BASE_URI,
    RUN_ID,
    ExecutionInput,
    Placeholder,
    asl_parameters,
    lookup,
    readable,
    references,
    resolve,
    run_path,
    unique_name,
    with_examples,
)

DOC = {"RunId": "r1", "BaseUri": "file:///runs/r1", "Epochs": 3,
       "Prepare": {"ImageHeight": 28, "Counts": [5, 6], "Nested": {"On": True}}}


def test_a_whole_placeholder_keeps_its_type_and_a_string_makes_text():
    body = {"H": Placeholder("$.Prepare.ImageHeight"), "Text": f"h={Placeholder('$.Prepare.ImageHeight')}",
            "Name": unique_name("train"), "Uri": run_path("data", "raw"),
            "List": [{"Second": Placeholder("$.Prepare.Counts")[1]}],
            "Flag": str(Placeholder("$.Prepare.Nested.On"))}
    assert resolve(body, DOC) == {"H": 28, "Text": "h=28", "Name": "train-r1",
                                  "Uri": "file:///runs/r1/data/raw", "List": [{"Second": 6}],
                                  "Flag": "true"}


def test_the_same_body_becomes_asl_parameters():
    body = {"H": Placeholder("$.Prepare.ImageHeight"), "Name": unique_name("train"),
            "Uri": run_path("data", "raw"), "Const": "x{y}'z", "Nested": {"N": str(RUN_ID)},
            "List": [{"U": f"{BASE_URI}/a"}]}
    assert asl_parameters(body) == {
        "H.$": "$.Prepare.ImageHeight",
        "Name.$": "States.Format('train-{}', $.RunId)",
        "Uri.$": "States.Format('{}/data/raw', $.BaseUri)",
        "Const": "x{y}'z",
        "Nested": {"N.$": "States.Format('{}', $.RunId)"},
        "List": [{"U.$": "States.Format('{}/a', $.BaseUri)"}]}
    assert sorted(references(body)) == ["$.BaseUri", "$.BaseUri", "$.Prepare.ImageHeight",
                                        "$.RunId", "$.RunId"]


def test_literal_braces_and_quotes_are_escaped_in_states_format():
    assert asl_parameters({"K": f"{RUN_ID}-{{a}}'b"}) == \
        {"K.$": "States.Format('{}-\\{a\\}\\'b', $.RunId)"}


def test_a_placeholder_inside_a_list_is_refused_with_the_field():
    with pytest.raises(ConfigError, match=r"Parameters.Args\[1\]"):
        asl_parameters({"Args": ["--x", str(RUN_ID)]})


def test_missing_value_names_the_field_and_what_exists():
    with pytest.raises(HarnessError) as e:
        resolve({"A": {"B": Placeholder("$.Prepare.Width")}}, DOC, "train")
    assert "train.A.B" in str(e.value) and "$.Prepare.Width" in str(e.value)
    assert "ImageHeight" in str(e.value)
    with pytest.raises(HarnessError, match="only on the emulator and cloud"):
        resolve(str(Placeholder("$.Bucket")), DOC)


def test_lookup_reads_paths_and_indexes():
    assert lookup(DOC, "$.Prepare.Counts[0]") == 5
    assert lookup(DOC, "$") is DOC
    with pytest.raises(ValueError):
        lookup(DOC, "$..x")


def test_bad_field_names_are_refused():
    with pytest.raises(ConfigError):
        Placeholder("$.A")["not valid"]


def test_execution_input_schema_and_validation():
    inp = ExecutionInput(schema={"Epochs": int, "Note": str})
    assert str(inp["Epochs"]) == "⟦$.Epochs⟧" and str(inp["RunId"]) == "⟦$.RunId⟧"
    with pytest.raises(ConfigError, match="no key 'Nope'"):
        inp["Nope"]
    assert inp.validate({"Epochs": 3, "Note": "x"}) == {"Epochs": 3, "Note": "x"}
    with pytest.raises(ConfigError, match="lacks 'Note'"):
        inp.validate({"Epochs": 3})
    with pytest.raises(ConfigError, match="inputs.Epochs"):
        inp.validate({"Epochs": "3", "Note": "x"})
    with pytest.raises(ConfigError, match="unknown execution input Other"):
        inp.validate({"Epochs": 3, "Note": "x", "Other": 1})
    with pytest.raises(ConfigError, match="set by the harness"):
        ExecutionInput(schema={"RunId": str})


def test_examples_and_readable_forms_for_plans():
    body = {"A": Placeholder("$.Train.X"), "B": run_path("m"), "C": unique_name("n")}
    partly = with_examples(body, {"RunId": "r9", "BaseUri": "s3://b/p/r9"})
    assert readable(partly) == {"A": "{$.Train.X}", "B": "s3://b/p/r9/m", "C": "n-r9"}
