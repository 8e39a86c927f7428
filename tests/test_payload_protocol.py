"""payloads.protocol: parse_line accepts protocol lines, rejects everything else, never raises."""

import ast
import json
import pathlib
import sys

from hypothesis import given
from hypothesis import strategies as st

from payloads import protocol
from payloads.protocol import format_event, parse_line


def test_roundtrip_and_nan_becomes_null():
    line = format_event("step", step=3, loss=float("nan"), samples=96)
    ev = parse_line(line)
    assert ev["event"] == "step" and ev["step"] == 3 and ev["loss"] is None
    assert isinstance(ev["time"], float)
    json.loads(line)  # strict JSON


def test_other_lines_are_none():
    for line in ["", "hello", "[1, 2]", '{"event": "x"}', '{"time": 1}', '{"event": 1, "time": 2}',
                 '{"event": "x", "time": "now"}', '{"event": "x", "time": true}', "{not json}", "{", b"\xff\xfe"]:
        assert parse_line(line) is None, line
    assert parse_line('  {"event": "end", "time": 1.5}\n') == {"event": "end", "time": 1.5}


@given(st.text())
def test_never_raises(text):
    assert parse_line(text) is None or isinstance(parse_line(text), dict)


def test_imports_only_stdlib():
    tree = ast.parse(pathlib.Path(protocol.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}
