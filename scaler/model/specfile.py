"""A network as a file: the zoo's table written as TOML (or JSON) and read back, every field checked."""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from scaler.errors import UserError, one_line, shown_path
from scaler.model.spec import ACTIVATIONS, BLOCK_TYPES, GROUPINGS, Head, NetSpec, SpecError, Stage, Stem

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REJECTED = object()  # what a field's conversion returns for a value that does not fit it


@dataclass(frozen=True)
class Rule:
    """What a field holds: `wants` in words for the message, `accept` the value converted, or REJECTED."""

    wants: str
    accept: Callable[[Any], Any]


def integer(test: Callable[[int], bool]) -> Callable[[Any], Any]:
    """An int (or a float without a fractional part; never a bool) that passes `test`."""

    def accept(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) and test(value) else REJECTED

    return accept


def number(test: Callable[[float], bool]) -> Callable[[Any], Any]:
    """A finite int or float (never a bool) that passes `test`, kept as given."""

    def accept(value: Any) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return value if ok and test(value) else REJECTED

    return accept


def choice(options: tuple[str, ...]) -> Rule:
    """One of `options`."""
    return Rule(f"must be one of {', '.join(options)}", lambda value: value if value in options else REJECTED)


def activation_list(value: Any) -> Any:
    """A list of activation names, as a tuple."""
    ok = isinstance(value, list) and all(isinstance(item, str) and item in ACTIVATIONS for item in value)
    return tuple(value) if ok else REJECTED


COUNT = Rule("must be an integer >= 1", integer(lambda v: v >= 1))
COUNT_OR_ZERO = Rule("must be an integer >= 0", integer(lambda v: v >= 0))
KERNEL = Rule("must be an odd integer >= 1", integer(lambda v: v >= 1 and v % 2 == 1))
STRIDE = Rule("must be 1 or 2", integer(lambda v: v in (1, 2)))
POSITIVE = Rule("must be a number > 0", number(lambda v: v > 0))
SHARE = Rule("must be a number >= 0", number(lambda v: v >= 0))
FRACTION = Rule("must be a number in [0, 1)", number(lambda v: 0 <= v < 1))
FLAG = Rule("must be true or false", lambda value: value if isinstance(value, bool) else REJECTED)
TEXT = Rule("must be a string", lambda value: value if isinstance(value, str) else REJECTED)
ACTIVATION = choice(ACTIVATIONS)

SCALARS: dict[str, Rule] = {"name": TEXT, "activation": ACTIVATION, "norm_eps": POSITIVE}
TOP_RULES: dict[str, Rule] = {  # the tables' own fields are checked by their rules below
    **SCALARS,
    "stem": Rule("must be a table ([stem])", lambda value: value if isinstance(value, dict) else REJECTED),
    "stages": Rule(
        "must be a non-empty array of tables, one [[stages]] per stage",
        lambda value: value if isinstance(value, list) and value else REJECTED,
    ),
    "head": Rule("must be a table ([head])", lambda value: value if isinstance(value, dict) else REJECTED),
}
STEM_RULES: dict[str, Rule] = {"out_channels": COUNT, "kernel": KERNEL, "stride": STRIDE, "maxpool": FLAG}
STAGE_RULES: dict[str, Rule] = {
    "block": choice(BLOCK_TYPES),
    "expand": POSITIVE,
    "kernel": KERNEL,
    "stride": STRIDE,
    "out_channels": COUNT,
    "repeats": COUNT,
    "se_ratio": FRACTION,
    "activation": ACTIVATION,
    "block_activations": Rule(f"must be a list of {', '.join(ACTIVATIONS)}, one per block", activation_list),
    "groups": COUNT,
    "grouping": choice(GROUPINGS),
    "group_spatial": FLAG,
    "duplicate": FLAG,
    "duplicate_top_k": COUNT,
    "duplicate_cap": SHARE,
    "equal_groups": FLAG,
}
HEAD_RULES: dict[str, Rule] = {"out_channels": COUNT_OR_ZERO, "dropout": FRACTION}
INPUT_FIELDS = ("in_channels", "resolution", "num_classes", "resolution_multiple")
ALWAYS_WRITTEN = ("block", "expand", "kernel", "stride", "out_channels", "repeats", "se_ratio", "activation")

HEADER = """\
# {name}: a scaler network table (stem, one [[stages]] entry per stage, head), written by `scaler spec`.
# Edit it and pass the file as --base to any command, e.g. `scaler profile --base FILE`.
# The input (channels, resolution, classes) comes from the task (--dataset or --input/--classes), as for a zoo name.
# Stage fields: block ({blocks}), expand, kernel, stride, out_channels, repeats, se_ratio,
# activation ({activations}); optional: block_activations (one per block), groups, grouping ({groupings}),
# group_spatial, duplicate, duplicate_top_k, duplicate_cap, equal_groups.
"""


def spec_dict(spec: NetSpec) -> dict[str, Any]:
    """The table of `spec` as plain data: what a spec file holds (no input fields, no None values)."""
    stages = []
    for stage in spec.stages:
        row = {}
        for item in fields(Stage):
            value = getattr(stage, item.name)
            if value is not None and (item.name in ALWAYS_WRITTEN or value != item.default):
                row[item.name] = list(value) if isinstance(value, tuple) else value
        stages.append(row)
    return {
        "name": spec.name,
        "activation": spec.activation,
        "norm_eps": spec.norm_eps,
        "stem": {item.name: getattr(spec.stem, item.name) for item in fields(Stem)},
        "stages": stages,
        "head": {item.name: getattr(spec.head, item.name) for item in fields(Head)},
    }


def toml_value(value: Any) -> str:
    """One TOML value: a bool, int, float, string or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_table(values: Mapping[str, Any]) -> list[str]:
    """`key = value` lines."""
    return [f"{key} = {toml_value(value)}" for key, value in values.items()]


def toml_text(data: Mapping[str, Any]) -> str:
    """A spec file's data (as `spec_dict` gives it) as TOML: top-level values, [stem], [[stages]] each, [head]."""
    lines = toml_table({key: value for key, value in data.items() if key not in ("stem", "stages", "head")})
    if "stem" in data:
        lines += ["", "[stem]", *toml_table(data["stem"])]
    for stage in data.get("stages", ()):
        lines += ["", "[[stages]]", *toml_table(stage)]
    if "head" in data:
        lines += ["", "[head]", *toml_table(data["head"])]
    return "\n".join(lines) + "\n"


def spec_text(spec: NetSpec) -> str:
    """The table of `spec` as a TOML file `read_spec_file` reads back to the same NetSpec (at the reference input)."""
    header = HEADER.format(
        name=spec.name,
        blocks=", ".join(BLOCK_TYPES),
        activations=", ".join(ACTIVATIONS),
        groupings=", ".join(GROUPINGS),
    )
    return header + "\n" + toml_text(spec_dict(spec))


def spec_json(spec: NetSpec) -> str:
    """The table of `spec` as JSON (the same fields as `spec_text`)."""
    return json.dumps(spec_dict(spec), indent=1) + "\n"


def shown(value: Any) -> str:
    """A value as the file writes it, cut short."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


class FileChecker:
    """Reads the tables of one spec file; every complaint is one line naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, message: str) -> UserError:
        """A UserError naming the file."""
        return UserError(f"{shown_path(self.path)}: {message}")

    def table(self, data: Any, where: str, rules: Mapping[str, Rule], required: tuple[str, ...]) -> dict[str, Any]:
        """The fields of table `where` ('' at the top), each converted by its rule; else one line."""
        at = f"{where}: " if where else ""
        if not isinstance(data, dict):
            raise self.error(f"{where} must be a table (got {shown(data)})")
        for key in data:
            if key not in rules:
                raise self.error(f"{at}unknown field {key!r}{self.hint(key, rules)}")
        for key in required:
            if key not in data:
                raise self.error(f"{at}missing field {key!r}, which {rules[key].wants}")
        values = {}
        for key, value in data.items():
            accepted = rules[key].accept(value)
            if accepted is REJECTED:
                raise self.error(f"{where + '.' if where else ''}{key} {rules[key].wants} (got {shown(value)})")
            values[key] = accepted
        return values

    @staticmethod
    def hint(key: str, rules: Mapping[str, Rule]) -> str:
        """What the field may have meant: the task for input fields, a near miss, else the fields there are."""
        if key in INPUT_FIELDS:
            return " (the input comes from the task: --dataset or --input/--classes)"
        close = difflib.get_close_matches(key, list(rules), n=1)
        return f"; did you mean {close[0]!r}?" if close else f"; fields are {', '.join(rules)}"

    def build(self, where: str, make: Callable[..., Any], values: dict[str, Any]) -> Any:
        """`make(**values)`, its own SpecError named after the file and `where`."""
        try:
            return make(**values)
        except SpecError as error:
            raise self.error(f"{where + ': ' if where else ''}{one_line(error)}") from None

    def spec(self, data: dict[str, Any]) -> NetSpec:
        """The NetSpec of a parsed file, at the reference input (3 channels, 224 px, 1000 classes)."""
        top = self.table(data, "", TOP_RULES, ("stem", "stages"))
        stem = self.build("stem", Stem, self.table(top.pop("stem"), "stem", STEM_RULES, required(Stem)))
        stages = tuple(
            self.build(f"stages[{i}]", Stage, self.table(row, f"stages[{i}]", STAGE_RULES, required(Stage)))
            for i, row in enumerate(top.pop("stages"))
        )
        head = self.build("head", Head, self.table(top.pop("head", {}), "head", HEAD_RULES, required(Head)))
        top.setdefault("name", self.path.stem)
        return self.build("", NetSpec, {**top, "stem": stem, "stages": stages, "head": head})


def required(kind: type) -> tuple[str, ...]:
    """The fields of dataclass `kind` without a default."""
    return tuple(item.name for item in fields(kind) if item.default is MISSING and item.default_factory is MISSING)


def parse(path: Path) -> Any:
    """The data of a TOML or JSON file (JSON by its .json suffix); else one line naming the file."""
    shown_name = shown_path(path)
    if path.is_dir():
        raise UserError(f"{shown_name} is a folder, not a network file (.toml or .json)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{shown_name}: no such network file (`scaler spec --base mobilenet > FILE` writes one)"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{shown_name} is not a text file (UTF-8 TOML or JSON)") from None
    except OSError as error:
        raise UserError(f"cannot read {shown_name}: {error.strerror or one_line(error)}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{shown_name} is not valid JSON: {one_line(error, 200)}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{shown_name} is not valid TOML: {one_line(error, 200)}") from None


def read_spec_file(path: Path) -> NetSpec:
    """The network a TOML or JSON spec file describes, at the reference input; a bad file ends in one line."""
    data = parse(path)
    if not isinstance(data, dict):
        raise UserError(f"{shown_path(path)} holds a JSON {type(data).__name__}, not a network table (an object)")
    return FileChecker(path).spec(data)
