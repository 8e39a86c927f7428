"""Job environment secrets: taken from the caller (``--env NAME``, ``--env-file FILE``) or the
spec's ``env:``, handed to the job only through its 0600 environment file, never stored in the
run database in plain text and never printed.

``cli_env`` builds the extra variables; ``redact_spec``/``redact_spec_text`` give what the run
record keeps instead (names, no values).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from launcher.errors import UsageError

REDACTED = "***"  # what the run record keeps instead of a value


def cli_env(names: list[str], files: list[Path], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables for the job from ``--env-file`` files (dotenv format, in order) then ``--env NAME``
    (the caller's environment; later wins). Raises UsageError naming the flag, file or line."""
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for path in files:
        if not Path(path).is_file():
            raise UsageError(f"--env-file {path}: {'not a file' if Path(path).exists() else 'no such file'}",
                             "check the path")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--env-file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})",
                             "check the path; the file must be UTF-8 text") from None
        for binding in parse_stream(io.StringIO(text)):
            if binding.error:  # python-dotenv would only log it and drop the variable: the job would lack it
                line = binding.original.line + len(binding.original.string) - len(binding.original.string.lstrip("\n"))
                raise UsageError(f"--env-file {path}:{line}: not a NAME=VALUE line (not shown: it may hold a secret)",
                                 "write it as NAME=VALUE, quote a value with spaces, start a comment with #")
        values = dotenv_values(stream=io.StringIO(text))
        for name, value in values.items():
            if value is None:
                raise UsageError(f"--env-file {path}: '{name}' has no value", f"write it as {name}=VALUE")
            out[name] = value
    for name in names:
        if "=" in name:
            raise UsageError(f"--env takes a name, not a value ('{name.split('=', 1)[0]}=...')",
                             f"export {name.split('=', 1)[0]} and pass --env {name.split('=', 1)[0]}, or use --env-file: "
                             "a value on the command line lands in your shell history")
        if name not in environ:
            raise UsageError(f"--env {name}: {name} is not set in your environment", f"export {name}=... first")
        out[name] = environ[name]
    return out


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec dict with every env value replaced by REDACTED (names kept)."""
    if not spec.get("env"):
        return spec
    return {**spec, "env": {k: REDACTED for k in spec["env"]}}


def redact_spec_text(text: str | None) -> str | None:
    """The spec's YAML with the values under the top-level ``env:`` replaced by REDACTED, byte
    for byte elsewhere. None when the text cannot be parsed (then nothing of it is kept)."""
    if not text:
        return text
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return text
    spans = []
    for key, value in root.value:
        if getattr(key, "value", None) != "env":
            continue
        if not isinstance(value, yaml.MappingNode):
            return None  # not a mapping: keep nothing rather than guess
        spans += [(v.start_mark.index, v.end_mark.index) for _, v in value.value]
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + f"'{REDACTED}'" + text[end:]
    return text
