"""Check an ASL definition against the Amazon States Language specification.

What AWS rejects at CreateStateMachine: unknown state types or fields, missing required
fields, a ``Next`` to a state that does not exist, a state with both or neither of
``Next``/``End``, malformed paths and intrinsic functions, bad Retry/Catch; plus states
that cannot be reached from ``StartAt`` (AWS rejects those too). Returns the problems as
sentences; an empty list means the definition is valid as far as these rules go.
"""
from __future__ import annotations

import re
from typing import Any

COMMON = {"Type", "Comment", "QueryLanguage"}
FIELDS = {
    "Task": COMMON | {"Resource", "Parameters", "ResultSelector", "ResultPath", "InputPath",
                      "OutputPath", "Retry", "Catch", "TimeoutSeconds", "TimeoutSecondsPath",
                      "HeartbeatSeconds", "HeartbeatSecondsPath", "Credentials", "Next", "End"},
    "Pass": COMMON | {"Result", "Parameters", "ResultPath", "InputPath", "OutputPath",
                      "Next", "End"},
    "Choice": COMMON | {"Choices", "Default", "InputPath", "OutputPath"},
    "Wait": COMMON | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath", "InputPath",
                      "OutputPath", "Next", "End"},
    "Succeed": COMMON | {"InputPath", "OutputPath"},
    "Fail": COMMON | {"Error", "ErrorPath", "Cause", "CausePath"},
    "Parallel": COMMON | {"Branches", "Parameters", "ResultSelector", "ResultPath",
                          "InputPath", "OutputPath", "Retry", "Catch", "Next", "End"},
    "Map": COMMON | {"ItemProcessor", "Iterator", "ItemsPath", "ItemSelector", "Parameters",
                     "MaxConcurrency", "ResultSelector", "ResultPath", "InputPath",
                     "OutputPath", "Retry", "Catch", "Next", "End", "ItemReader",
                     "ResultWriter", "ItemBatcher", "ToleratedFailurePercentage",
                     "ToleratedFailureCount", "Label"},
}
TERMINAL = {"Choice", "Succeed", "Fail"}
COMPARATORS = {
    f"{kind}{op}{suffix}"
    for kind in ("String", "Numeric", "Timestamp")
    for op in ("Equals", "LessThan", "GreaterThan", "LessThanEquals", "GreaterThanEquals")
    for suffix in ("", "Path")
} | {"BooleanEquals", "BooleanEqualsPath", "StringMatches", "IsNull", "IsPresent",
     "IsNumeric", "IsString", "IsBoolean", "IsTimestamp"}
INTRINSICS = {"States.Format", "States.StringToJson", "States.JsonToString", "States.Array",
              "States.ArrayPartition", "States.ArrayContains", "States.ArrayRange",
              "States.ArrayGetItem", "States.ArrayLength", "States.ArrayUnique",
              "States.Base64Encode", "States.Base64Decode", "States.Hash", "States.JsonMerge",
              "States.MathRandom", "States.MathAdd", "States.StringSplit", "States.UUID"}

# A reference path: $, then .name / ['name'] / [index] steps (no filters or wildcards).
_REF_STEP = r"(\.[A-Za-z_][A-Za-z0-9_\-]*|\['[^']+'\]|\[\d+\])"
REFERENCE_PATH = re.compile(rf"^\$(?:{_REF_STEP})*$")
# A general path (Parameters values) may also use filters, wildcards and slices.
_PATH_STEP = r"(\.[A-Za-z_*][A-Za-z0-9_\-]*|\['[^']+'\]|\[\d*:?\d*\]|\[\*\]|\[\?\(.+?\)\])"
JSON_PATH = re.compile(rf"^\$\$?(?:{_PATH_STEP})*$")


def _intrinsic_ok(text: str) -> bool:
    m = re.match(r"^(States\.[A-Za-z0-9]+)\((.*)\)$", text, re.S)
    if not m or m.group(1) not in INTRINSICS:
        return False
    args, depth, quote, buf = [], 0, False, ""
    i = 0
    body = m.group(2)
    while i < len(body):
        c = body[i]
        if quote:
            if c == "\\":
                buf += body[i:i + 2]
                i += 2
                continue
            if c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(buf.strip())
            buf = ""
            i += 1
            continue
        buf += c
        i += 1
    if quote or depth:
        return False
    if buf.strip():
        args.append(buf.strip())
    for arg in args:
        if arg.startswith("'"):
            if not (arg.endswith("'") and len(arg) >= 2):
                return False
        elif arg.startswith("$"):
            if not JSON_PATH.match(arg):
                return False
        elif arg.startswith("States."):
            if not _intrinsic_ok(arg):
                return False
        elif not re.fullmatch(r"-?\d+(\.\d+)?|true|false|null", arg):
            return False
    if m.group(1) == "States.Format" and args:
        template = args[0][1:-1]
        holes = len(re.findall(r"(?<!\\)\{\}", template))
        if holes != len(args) - 1:
            return False
    return True


def _check_payload(where: str, payload: Any, problems: list[str]) -> None:
    """Parameters / ResultSelector: keys ending in .$ hold a path or an intrinsic."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    problems.append(f"{where}: '{key}' must be a string path")
                elif value.startswith("States."):
                    if not _intrinsic_ok(value):
                        problems.append(f"{where}: '{key}' is not a valid intrinsic: {value}")
                elif not JSON_PATH.match(value):
                    problems.append(f"{where}: '{key}' is not a valid JSONPath: {value}")
            else:
                _check_payload(f"{where}.{key}", value, problems)
    elif isinstance(payload, list):
        for i, v in enumerate(payload):
            _check_payload(f"{where}[{i}]", v, problems)


def _check_rule(where: str, rule: dict[str, Any], top: bool, names: set[str],
                problems: list[str]) -> None:
    if top:
        if rule.get("Next") not in names:
            problems.append(f"{where}: Next {rule.get('Next')!r} is not a state")
    elif "Next" in rule:
        problems.append(f"{where}: only top-level choice rules may have Next")
    combos = [k for k in ("And", "Or", "Not") if k in rule]
    if combos:
        inner = rule[combos[0]]
        items = inner if isinstance(inner, list) else [inner]
        if combos[0] != "Not" and not items:
            problems.append(f"{where}: {combos[0]} needs at least one rule")
        for i, sub in enumerate(items):
            _check_rule(f"{where}.{combos[0]}[{i}]", sub, False, names, problems)
        return
    ops = [k for k in rule if k in COMPARATORS]
    if len(ops) != 1:
        problems.append(f"{where}: needs exactly one comparison operator, has {ops}")
    var = rule.get("Variable")
    if not isinstance(var, str) or not JSON_PATH.match(var):
        problems.append(f"{where}: Variable must be a JSONPath, got {var!r}")
    for op in ops:
        if op.endswith("Path") and not REFERENCE_PATH.match(str(rule[op])):
            problems.append(f"{where}: {op} must be a reference path")
        if op.startswith("Numeric") and not op.endswith("Path") and \
                not isinstance(rule[op], (int, float)):
            problems.append(f"{where}: {op} needs a number")


def _check_retry_catch(where: str, state: dict[str, Any], names: set[str],
                       problems: list[str]) -> None:
    for kind in ("Retry", "Catch"):
        for i, r in enumerate(state.get(kind, [])):
            errs = r.get("ErrorEquals")
            if not errs or not isinstance(errs, list):
                problems.append(f"{where}.{kind}[{i}]: ErrorEquals must be a non-empty list")
            elif "States.ALL" in errs and len(errs) > 1:
                problems.append(f"{where}.{kind}[{i}]: States.ALL must appear alone")
            if kind == "Catch":
                if r.get("Next") not in names:
                    problems.append(f"{where}.Catch[{i}]: Next {r.get('Next')!r} is not a state")
                if "ResultPath" in r and r["ResultPath"] is not None and \
                        not REFERENCE_PATH.match(r["ResultPath"]):
                    problems.append(f"{where}.Catch[{i}]: ResultPath is not a reference path")
            else:
                if r.get("MaxAttempts", 3) < 0 or r.get("BackoffRate", 2.0) < 1.0:
                    problems.append(f"{where}.Retry[{i}]: MaxAttempts >= 0, BackoffRate >= 1")
        for i, r in enumerate(state.get(kind, [])[:-1]):
            if "States.ALL" in (r.get("ErrorEquals") or []):
                problems.append(f"{where}.{kind}[{i}]: States.ALL must be the last rule")


def validate(asl: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    states = asl.get("States")
    if not isinstance(states, dict) or not states:
        return ["States must be a non-empty object"]
    names = set(states)
    if asl.get("StartAt") not in names:
        problems.append(f"StartAt {asl.get('StartAt')!r} is not a state")
    edges: dict[str, set[str]] = {n: set() for n in names}
    for name, st in states.items():
        where = f"States.{name}"
        if len(name) > 80:
            problems.append(f"{where}: state names are at most 80 characters")
        kind = st.get("Type")
        if kind not in FIELDS:
            problems.append(f"{where}: unknown Type {kind!r}")
            continue
        for extra in set(st) - FIELDS[kind]:
            problems.append(f"{where}: field {extra!r} is not allowed in a {kind} state")
        if kind not in TERMINAL:
            has_next, has_end = "Next" in st, st.get("End") is True
            if has_next == has_end:
                problems.append(f"{where}: needs exactly one of Next or End")
            if has_next:
                if st["Next"] not in names:
                    problems.append(f"{where}: Next {st['Next']!r} is not a state")
                edges[name].add(st["Next"])
        for field in ("InputPath", "OutputPath", "ResultPath"):
            if field in st and st[field] is not None:
                pattern = REFERENCE_PATH if field == "ResultPath" else JSON_PATH
                if not pattern.match(st[field]):
                    problems.append(f"{where}: {field} {st[field]!r} is not a valid path")
        for field in ("Parameters", "ResultSelector"):
            if field in st:
                _check_payload(f"{where}.{field}", st[field], problems)
        if kind == "Task":
            if not str(st.get("Resource", "")).startswith("arn:"):
                problems.append(f"{where}: Task needs a Resource ARN")
            _check_retry_catch(where, st, names, problems)
            edges[name] |= {c.get("Next") for c in st.get("Catch", []) if c.get("Next")}
        if kind == "Choice":
            choices = st.get("Choices")
            if not choices:
                problems.append(f"{where}: Choice needs a non-empty Choices list")
            for i, rule in enumerate(choices or []):
                _check_rule(f"{where}.Choices[{i}]", rule, True, names, problems)
                if rule.get("Next"):
                    edges[name].add(rule["Next"])
            if "Default" in st:
                if st["Default"] not in names:
                    problems.append(f"{where}: Default {st['Default']!r} is not a state")
                edges[name].add(st["Default"])
        if kind == "Wait":
            given = [k for k in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath") if k in st]
            if len(given) != 1:
                problems.append(f"{where}: Wait needs exactly one of Seconds, SecondsPath, "
                                f"Timestamp, TimestampPath")
        if kind == "Fail":
            for a, b in (("Error", "ErrorPath"), ("Cause", "CausePath")):
                if a in st and b in st:
                    problems.append(f"{where}: {a} and {b} are exclusive")
            for b in ("ErrorPath", "CausePath"):
                if b in st:
                    v = st[b]
                    ok = _intrinsic_ok(v) if v.startswith("States.") else bool(REFERENCE_PATH.match(v))
                    if not ok:
                        problems.append(f"{where}: {b} is not a reference path or intrinsic")
    # reachability
    seen, todo = set(), [asl.get("StartAt")]
    while todo:
        n = todo.pop()
        if n in seen or n not in names:
            continue
        seen.add(n)
        todo.extend(edges[n])
    for n in sorted(names - seen):
        problems.append(f"States.{n}: cannot be reached from StartAt")
    if not any(states[n].get("Type") in ("Succeed", "Fail") or states[n].get("End") is True
               for n in seen):
        problems.append("no reachable terminal state (Succeed, Fail or End)")
    return problems
