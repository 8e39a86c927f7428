"""YAML job spec -> typed model.

``load_spec(path)`` returns a ``JobSpec`` or raises ``SpecError`` naming the file, the line,
the field path and the fix. Unknown keys are rejected with "did you mean ...".
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from launcher.errors import SpecError
from launcher.payloads import lm_shapes  # standard library only

IMAGE_MODELS = ("vgg16", "vgg11", "resnet50", "resnet18", "mobilenetv2", "vit_b16", "tinycnn", "mlp")
MODELS = IMAGE_MODELS + lm_shapes.ALL_NAMES  # language models: payloads/lm_shapes.py
# A user model: "package.module:callable" or "path/to/file.py:callable" (payloads/factory.py).
_FACTORY = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_.]*$")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
PROVIDERS = ("local", "ssh", "aws", "gcp")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """'90m' / '2h' / '45s' / 3600 -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90m or 2h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m and _DURATION.match(str(value).strip().lstrip("-")):  # '-5m': a duration, but negative
            raise ValueError(f"{value!r} is not a duration: it must be positive, like 5m")
        if not m:
            raise ValueError(f"{value!r} is not a duration; write it like 45s, 90m, 2h or 1d")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class _EnvNameError(ValueError):
    """An ``env`` key that cannot be a variable name; ``key`` lets the error name its own line."""

    def __init__(self, key: str):
        super().__init__(f"{key!r} is not a valid environment variable name")
        self.key = key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accelerator(_Strict):
    name: str
    count: int = Field(1, ge=1, le=16)

    @field_validator("name")
    @classmethod
    def _upper(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("accelerator name is empty; write it like V100 or A100-80GB")
        return v.upper()

    def __str__(self) -> str:
        return f"{self.name}:{self.count}"


BUILTIN_DATASETS = ("synthetic", "digits")  # any other workload.dataset is a path (payloads/data.py)


class Workload(_Strict):
    model: str = "resnet50"  # a built-in name (MODELS) or a factory "pkg.mod:fn" / "path/file.py:fn"
    # keyword arguments of a factory; for a language model, fields of payloads/lm_shapes.LMShape
    model_args: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int] | None = None  # one sample, e.g. [3, 224, 224]; default [in_channels, image_size, image_size]
    image_size: int = Field(224, ge=8, le=1024)
    num_classes: int = Field(1000, ge=2, le=100000)
    in_channels: int = Field(3, ge=1, le=16)
    dataset: str = "synthetic"
    samples_per_epoch: int = Field(1281167, ge=1)
    epochs: float = Field(1, gt=0)
    batch_size: int = Field(128, ge=1, le=65536)
    precision: Literal[PRECISIONS] = "bf16"  # type: ignore[valid-type]
    learning_rate: float | None = Field(None, gt=0)  # None: 0.1 (SGD, image models), 3e-4 (AdamW, LMs)
    compile: bool | None = None  # None: on for CUDA, off for CPU
    channels_last: bool = True
    # Language models (model: gpt2-124m, lm-1b, ..., or lm with model_args) and factories fed
    # tokens (seq_len and vocab_size set): batch_size counts sequences per GPU and
    # samples_per_epoch counts tokens.
    seq_len: int | None = Field(None, ge=8, le=1048576)  # None: the preset's (1024 gpt2, 2048 llama)
    vocab_size: int | None = Field(None, ge=2, le=1048576)  # None: the preset's
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: FSDP when the memory plan needs it
    activation_checkpointing: bool | None = None  # None: only when the memory plan needs it

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        v = v.strip()
        if ":" in v:
            if not _FACTORY.match(v):
                raise ValueError(f"{v!r} is not a model factory; write 'package.module:callable' or "
                                 "'path/to/file.py:callable'")
            return v
        if v not in MODELS:
            if v.endswith(".py") or "/" in v:  # a file without its callable
                raise ValueError(f"'{v}' names a file but not the function in it that builds the model: "
                                 f"write '{v}:build' (the function's name after a colon)")
            close = _close(v, MODELS)
            hint = f"did you mean '{close}'?" if close else "or a factory such as 'models/net.py:build'"
            raise ValueError(f"'{v}' is not a built-in model ({', '.join(MODELS)}); {hint}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shape_shorthand(cls, data: Any) -> Any:
        """input_shape [C, S, S] sets in_channels and image_size (the shorthand), so both agree."""
        if isinstance(data, dict) and isinstance(data.get("input_shape"), list):
            shape = data["input_shape"]
            if not shape or len(shape) > 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                      for d in shape):
                raise ValueError("input_shape must be 1 to 4 positive whole numbers, one sample without the "
                                 "batch, e.g. [3, 224, 224]")
            if len(shape) == 3 and shape[1] == shape[2]:
                for key, value in (("in_channels", shape[0]), ("image_size", shape[1])):
                    if key in data and data[key] != value:
                        raise ValueError(f"input_shape {shape} disagrees with {key}: {data[key]}; give one of them")
                data = {**data, "in_channels": shape[0], "image_size": shape[1]}
        return data

    @model_validator(mode="after")
    def _builtin_takes_images(self) -> "Workload":
        if self.input_shape is not None and not self.is_factory and (
                len(self.input_shape) != 3 or self.input_shape[1] != self.input_shape[2]):
            raise ValueError(f"built-in model {self.model} takes square images [channels, size, size], "
                             f"not input_shape {self.input_shape}")
        if self.model_args and not self.is_factory and not self.is_lm:
            raise ValueError(f"model_args are for a model factory or a language model; built-in {self.model} "
                             "takes none")
        return self

    @model_validator(mode="before")
    @classmethod
    def _epoch_is_the_dataset(cls, data: Any) -> Any:
        """A real dataset and no samples_per_epoch: an epoch is one pass over its training samples
        (digits 1,438 after its held-out fifth; a folder's images; a .npz's x), not ImageNet's."""
        if (isinstance(data, dict) and "samples_per_epoch" not in data and isinstance(data.get("dataset"), str)
                and data["dataset"] != "synthetic" and data.get("seq_len") is None
                and not lm_shapes.is_lm(str(data.get("model", "")))):
            from launcher.payloads.datasize import train_samples

            n = train_samples(data["dataset"])
            if n:
                data = {**data, "samples_per_epoch": n}
        return data

    @model_validator(mode="after")
    def _dataset_gives_images(self) -> "Workload":
        shape = self.input_shape
        if self.dataset != "synthetic" and self.input_vocab:
            raise ValueError(f"dataset {self.dataset} holds images; a model fed token ids (vocab_size) trains on "
                             "dataset: synthetic")
        if self.dataset != "synthetic" and shape is not None and (len(shape) != 3 or shape[1] != shape[2]):
            raise ValueError(f"dataset {self.dataset} holds images, fed as [in_channels, image_size, image_size]; "
                             f"input_shape {shape} is not one: give an image input_shape such as "
                             f"[3, 224, 224], or dataset: synthetic")
        return self

    @property
    def is_factory(self) -> bool:
        return ":" in self.model

    @property
    def input_vocab(self) -> int | None:
        """A factory classifier fed token ids (``vocab_size`` with ``input_shape``, no ``seq_len``):
        its input is int64 ids 0 .. vocab_size - 1 of ``input_shape``, one label per sample (the
        image trainer's loop); None otherwise."""
        return self.vocab_size if self.is_factory and self.seq_len is None else None

    @property
    def is_token_model(self) -> bool:
        """A built-in language model, or a factory fed token ids (``seq_len`` set): a sample is a
        token, ``batch_size`` counts sequences and ``samples_per_epoch`` tokens."""
        return self.is_lm or (self.is_factory and self.seq_len is not None)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (no batch dimension); a token model's is one sequence."""
        if self.is_token_model and not self.is_lm:
            return (int(self.seq_len),)
        if self.input_shape is not None:
            return tuple(self.input_shape)
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def total_samples(self) -> int:
        return int(round(self.samples_per_epoch * self.epochs))

    @property
    def is_lm(self) -> bool:
        return lm_shapes.is_lm(self.model)

    def lm_shape(self) -> "lm_shapes.LMShape":
        """The language model's shape (ValueError for a shape that cannot be built)."""
        return lm_shapes.resolve(self.model, self.model_args, self.vocab_size, self.seq_len)

    @property
    def effective_seq_len(self) -> int:
        if not self.is_lm:
            return int(self.seq_len or 0)
        return self.seq_len or lm_shapes.default_seq_len(self.lm_shape())

    @model_validator(mode="after")
    def _lm_fields(self) -> "Workload":
        if self.is_factory and self.seq_len is not None:  # a token-model factory
            if self.vocab_size is None:
                raise ValueError("a model factory fed tokens (seq_len) needs vocab_size too: token ids are "
                                 "0 .. vocab_size - 1")
            if self.input_shape is not None:
                raise ValueError("give seq_len and vocab_size (a token model) or input_shape, not both")
            return self
        if self.is_factory and self.vocab_size is not None:  # a classifier fed token ids
            if self.input_shape is None:
                raise ValueError("a model factory fed token ids needs input_shape (e.g. [128] tokens per sample) "
                                 "with vocab_size, or seq_len with vocab_size for a language model trained per "
                                 "token")
            return self
        if not self.is_lm:
            for key in ("seq_len", "vocab_size"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} applies to language models (model: {', '.join(lm_shapes.NAMES)}"
                                     f" or lm) and to a model factory fed tokens (with seq_len), not {self.model}")
            return self
        self.lm_shape()  # raises ValueError naming the bad key
        return self


class Resources(_Strict):
    accelerators: Accelerator | None = None
    instance_type: str | None = None
    regions: list[str] = Field(default_factory=list)
    spot: bool = False
    num_nodes: int = Field(1, ge=1, le=64)
    disk_gb: int = Field(100, ge=20, le=16384)
    image_id: str | None = None
    # after limits.max_restarts reclaimed spot attempts, the next one runs on-demand (None: give up)
    spot_fallback: Literal["on-demand"] | None = None

    @model_validator(mode="after")
    def _fallback_needs_spot(self) -> "Resources":
        if self.spot_fallback and not self.spot:
            raise ValueError("spot_fallback applies to spot runs only; set spot: true or remove spot_fallback")
        return self

    @field_validator("accelerators", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            name, sep, count = v.partition(":")
            if sep and not count.strip().isdigit():
                raise ValueError(f"{v!r}: the count after ':' must be a whole number, like V100:1")
            return {"name": name, "count": int(count) if sep else 1}
        return v


MIN_GUARD_S = 60.0  # shorter would power a machine off while its client reconnects


class Limits(_Strict):
    max_duration: float = Field(6 * 3600.0, description="seconds")
    budget_usd: float | None = Field(None, gt=0)
    # The machine's guard (launcher/guard.py): seconds the results wait for a client once the job
    # ended, and seconds without any attached client (while no job runs) before it powers off.
    unfetched_grace: float = Field(15 * 60.0, description="seconds")
    idle_timeout: float = Field(10 * 60.0, description="seconds")
    # spot runs: how many times a reclaimed machine is replaced (resume from the last checkpoint)
    max_restarts: int = Field(3, ge=0, le=100)
    # seconds between checkpoint pulls to the client (only when it changed); None: 10 min for spot runs
    checkpoint_every: float | None = Field(None, description="seconds")

    @field_validator("max_duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("unfetched_grace", "idle_timeout", mode="before")
    @classmethod
    def _guard_duration(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds < MIN_GUARD_S:
            raise ValueError(f"{v!r} is too short: at least 1m (60s), so a client that is reconnecting "
                             "is not mistaken for a gone one")
        return seconds
    @field_validator("max_restarts", mode="before")
    @classmethod
    def _restarts(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML's true/yes would be 1 restart
            raise ValueError(f"{v!r} is not a number of restarts; write a whole number like 3 (0: none)")
        return v

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _every(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)


class Payload(_Strict):
    """What runs on the machine. Default: our built-in trainer in payloads/."""

    entrypoint: str = "payloads/train.py"
    args: list[str] = Field(default_factory=list)
    python: str = "python3"  # interpreter on the machine (a venv or conda path works too)
    ignore: list[str] = Field(default_factory=lambda: ["__pycache__", "*.pyc", ".git"])


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    workload: Workload = Field(default_factory=Workload)
    resources: Resources = Field(default_factory=Resources)
    limits: Limits = Field(default_factory=Limits)
    payload: Payload = Field(default_factory=Payload)
    setup: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=lambda: ["outputs/"])
    # s3://bucket/prefix: the machine keeps the checkpoint there instead of the client pulling it
    checkpoint_store: str | None = None

    @field_validator("artifacts")
    @classmethod
    def _only_outputs(cls, v: list[str]) -> list[str]:
        """What comes home is outputs/ and the job's log (launcher.artifacts.fetch): any other entry
        would be lost with the machine, so it is refused before anything is created."""
        for entry in v:
            if entry.strip().removeprefix("./").rstrip("/") != "outputs":
                raise ValueError(f"{entry!r} would not come home: only outputs/ (and the job's log) is brought back "
                                 f"before the machine goes; have the job write it under outputs/ "
                                 f"(e.g. outputs/{entry.strip().removeprefix('./').strip('/') or 'results'}/)")
        return v

    @field_validator("checkpoint_store")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from launcher.checkpoints import parse_store

        return parse_store(v).url

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):  # _explain points at the key's own line
                raise _EnvNameError(key)
        return v


# --- loading with file:line errors -------------------------------------------------------


def _fields_at(loc: tuple) -> list[str]:
    """Names of the fields allowed at a location, for "did you mean"."""
    model: Any = JobSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """Deepest YAML node reachable along loc (keys and list indices)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if nxt is None:
                return node
            # for an unknown key point at the key itself
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _key_line(root: yaml.Node | None, loc: tuple) -> int | None:
    parent = _node_at(root, loc[:-1]) if loc else root
    if isinstance(parent, yaml.MappingNode) and loc:
        for k, _ in parent.value:
            if getattr(k, "value", None) == str(loc[-1]):
                return k.start_mark.line + 1
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else None


def _explain(err: dict, path: str, root: yaml.Node | None) -> SpecError:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    loc = tuple(p for p in loc if p not in ("Accelerator",))
    bad_env = (err.get("ctx") or {}).get("error")
    if isinstance(bad_env, _EnvNameError):
        loc = loc + (bad_env.key,)
        return SpecError(path, _key_line(root, loc), ".".join(str(p) for p in loc),
                         f"{bad_env.key!r} is not a valid environment variable name",
                         "use letters, digits and _, not starting with a digit")
    dotted = ".".join(str(p) for p in loc)
    line = _key_line(root, loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return SpecError(path, line, dotted, f"unknown key '{loc[-1]}'", hint)
    if kind == "missing":
        return SpecError(path, line, dotted, "is required", f"add '{loc[-1]}:' to the spec")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        got = str(err.get("input"))
        options = re.findall(r"'([^']+)'", expected)
        close = _close(got, options)
        hint = f"did you mean '{close}'?" if close else f"use one of {expected}"
        return SpecError(path, line, dotted, f"'{got}' is not allowed", hint)
    msg = err["msg"].removeprefix("Value error, ")
    hint = None
    if kind == "string_pattern_mismatch" and loc == ("name",):
        hint = "use lowercase letters, digits and '-', starting with a letter or digit"
    return SpecError(path, line, dotted, msg, hint)


def _close(word: str, options, cutoff: float = 0.5) -> str | None:
    """The option ``word`` most likely meant: the same letters in another case first ('BF16' is
    'bf16', not 'fp16'), else the closest spelling; None when nothing is close."""
    same = [o for o in options if o.casefold() == word.casefold()]
    close = same or difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return close[0] if close else None


def parse_spec(text: str, path: str = "<spec>", check_catalog: bool = True) -> JobSpec:
    """YAML text -> JobSpec. Raises SpecError for bad YAML, duplicate keys, schema errors and
    (``check_catalog``) names the price catalog or GPU table refutes (see ``spec_names``)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(path, line, "", f"invalid YAML: {problem}", "check indentation and quoting") from None
    except (ValueError, RecursionError) as exc:  # e.g. exotic scalars the SafeLoader rejects
        raise SpecError(path, None, "", f"invalid YAML: {exc}", "check the file is plain YAML") from None
    _no_duplicate_keys(root, path)
    if data is None:
        raise SpecError(path, 1, "", "the spec is empty", "start from jobs/quickstart.yaml")
    if not isinstance(data, dict):
        raise SpecError(path, 1, "", "the spec must be a mapping of keys", "start from jobs/quickstart.yaml")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc.errors()[0], path, root) from None
    if check_catalog:
        from launcher.spec_names import check_names

        check_names(spec, _catalog(), lambda loc: _key_line(root, loc), path)
    return spec


def _catalog():
    """The price catalog for name checks; None when it cannot be read (names are then checked
    against the GPU table only, and `gpujob catalog update` says what is wrong)."""
    from launcher.catalog import load_catalog
    from launcher.errors import CatalogError

    try:
        return load_catalog()
    except CatalogError:
        return None


def _no_duplicate_keys(node: yaml.Node | None, path: str, loc: tuple = ()) -> None:
    """YAML lets a repeated key silently replace the first: refuse it at any depth, naming both lines."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            line = key.start_mark.line + 1
            if name in first:
                dotted = ".".join(str(p) for p in loc + (name,))
                raise SpecError(path, line, dotted, f"duplicate key '{name}' (first at line {first[name]}, again at line {line})",
                                "keep one of them: YAML would silently use the last")
            first[name] = line
            _no_duplicate_keys(value, path, loc + (name,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicate_keys(item, path, loc + (i,))


def check_factory_file(spec: JobSpec, path: str | Path, root: str | Path | None = None) -> None:
    """Refuse a ``workload.model`` that names a file missing from the project directory.

    path: the spec file (for the error's line); root: the project directory, the one gpujob
    runs in and uploads (default: the current directory). Raises SpecError (exit 2) naming the
    spec's line and the directory looked in; a built-in name or a dotted module reference passes
    (an installed package is found only when the model is built).
    """
    model = spec.workload.model
    if not spec.workload.is_factory:
        return
    target = model.rsplit(":", 1)[0]
    if not (target.endswith(".py") or "/" in target or os.sep in target):
        return
    base = Path(root or Path.cwd()).resolve()
    file = (base / target).resolve()
    inside = file == base or base in file.parents
    if inside and file.is_file():
        from launcher.uploads import is_uploaded

        rel = file.relative_to(base).as_posix()
        if is_uploaded(base, rel, list(spec.payload.ignore)):
            return
    line = _spec_line(path, ("workload", "model"))
    if inside and file.is_file():  # here, but not in what the machine (or a local run's copy) gets
        raise SpecError(str(path), line, "workload.model",
                        f"{target} is not uploaded: the upload's ignore rules (.gitignore, .gpujobignore, "
                        "payload.ignore) leave it out",
                        f"re-include it in a .gpujobignore ('!{rel}', and its folder if that is ignored) or "
                        "move it")
    if not inside and file.is_file():  # found here, but the machine gets the project directory only
        raise SpecError(str(path), line, "workload.model",
                        f"{target} is outside the project directory {base}, which is what gpujob uploads "
                        "(and where a local run starts)",
                        "run gpujob from a directory that holds the model file and give its path from there, "
                        "or copy the file into this one")
    raise SpecError(str(path), line, "workload.model",
                    f"no file {target} in {base}",
                    "paths are relative to the project directory, the one gpujob runs in and uploads: "
                    "run gpujob from there or fix the path")


def project_dataset(dataset: str, root: str | Path | None = None) -> str | None:
    """``workload.dataset`` relative to the project directory (``root``, default the current
    one) when it is a relative path to a file or folder inside it, which the machine then gets
    with the project; None otherwise (synthetic, digits, an absolute or ~ path, a path missing
    here: the machine's own, e.g. made by ``setup``)."""
    where = _dataset_here(dataset, root)
    if where is None or not where[1].exists() or not (where[1] == where[0] or where[0] in where[1].parents):
        return None
    return where[1].relative_to(where[0]).as_posix()


def _dataset_here(dataset: str, root: str | Path | None) -> tuple[Path, Path] | None:
    """(project directory, the dataset's path resolved in it) for a relative path; None for a
    built-in dataset or an absolute or ~ path (the machine's own)."""
    if dataset in BUILTIN_DATASETS or os.path.isabs(dataset) or dataset.startswith("~"):
        return None
    base = Path(root or Path.cwd()).resolve()
    return base, (base / dataset).resolve()


def check_dataset_path(spec: JobSpec, path: str | Path, root: str | Path | None = None) -> None:
    """Refuse a ``workload.dataset`` that the machine would not find although it is here: outside
    the project directory (``../data``), or left out of the upload by its ignore rules (a data
    folder in .gitignore); and a bare word that is a misspelt built-in (``digit``). Raises
    SpecError (exit 2) naming the spec's line, before anything is created."""
    dataset = spec.workload.dataset
    where = _dataset_here(dataset, root)
    if where is None:
        return
    base, target = where
    rel = project_dataset(dataset, base)
    if rel is not None:
        from launcher.uploads import is_uploaded

        if is_uploaded(base, rel, list(spec.payload.ignore) + ["gpujob-runs"]):
            return
        problem = (f"{dataset} is not uploaded: the upload's ignore rules (.gitignore, .gpujobignore, "
                   "payload.ignore) leave it out")
        fix = f"re-include it in a .gpujobignore ('!{rel}', and its folder if that is ignored)"
    elif target.exists():
        problem = (f"{dataset} is outside the project directory {base}, which is what gpujob uploads "
                   "(and where a local run starts)")
        fix = "move it into this directory, or give the path the machine has it at as an absolute path"
    else:
        close = _close(dataset, BUILTIN_DATASETS, cutoff=0.6)
        if spec.setup or not close or "/" in dataset or "." in dataset:
            return  # a path on the machine (made by setup, say): the payload says if it is missing
        problem, fix = f"'{dataset}' is neither a built-in dataset nor a path in {base}", f"did you mean '{close}'?"
    raise SpecError(str(path), _spec_line(path, ("workload", "dataset")), "workload.dataset", problem, fix)


def _spec_line(path: str | Path, loc: tuple) -> int | None:
    """The line of ``loc`` in the spec file at ``path`` (None when it cannot be read)."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError, ValueError):
        node = None
    return _key_line(node, loc)


def with_env(spec: JobSpec, extra: dict[str, str], path: str = "<spec>") -> JobSpec:
    """The spec with ``extra`` variables added to ``env`` (they win), validated like the file's."""
    env = {**spec.env, **extra}
    try:  # the names are checked like the file's; the copy keeps which sections the file set
        JobSpec.model_validate({"name": spec.name, "env": env})
    except ValidationError as exc:
        raise _explain(exc.errors()[0], path, None) from None
    return spec.model_copy(update={"env": env})


def load_spec(path: str | Path) -> JobSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(p), None, "", "no such file", "check the path; examples are in jobs/") from None
    except IsADirectoryError:
        raise SpecError(str(p), None, "", "is a directory, not a YAML file", "pass a .yaml file") from None
    except UnicodeDecodeError:
        raise SpecError(str(p), None, "", "is not UTF-8 text", "save the spec as UTF-8 YAML") from None
    except OSError as exc:
        raise SpecError(str(p), None, "", f"cannot read: {exc.strerror}", "check permissions") from None
    return parse_spec(text, str(p))


def load_job(path: str | Path) -> JobSpec:
    """``load_spec``, then ``check_factory_file`` in the current directory: how every command that
    takes a spec reads it, so a ``workload.model`` file that is missing is the same one line (the
    spec's file and line, the fix) from validate, estimate and run alike."""
    spec = load_spec(path)
    check_factory_file(spec, path)
    check_dataset_path(spec, path)
    return spec
