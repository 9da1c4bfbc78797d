"""A network from a file: `scaler spec` writes the zoo's table, --base FILE reads it back, bad files end in one line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from scaler.experiments.options import output_folder
from scaler.experiments.search.config import SearchConfig
from scaler.model import specfile, zoo
from scaler.model.spec import Head, Stage, Stem
from scaler.model.specfile import read_spec_file, spec_dict, spec_json, spec_text, toml_text
from scaler.model.variants import apply_variant

Change = Callable[[dict[str, Any]], object]  # an edit of a spec file's data
PROFILE = ["profile", "--input", "1x28x28", "--classes", "10", "--phi", "0", "1", "--runs", "1", "--json"]


@pytest.mark.parametrize("name", list(zoo.BASES))
@pytest.mark.parametrize("write", [spec_text, spec_json], ids=["toml", "json"])
def test_round_trip_of_every_zoo_base(tmp_path: Path, name: str, write: Callable[..., str]) -> None:
    path = tmp_path / f"net.{'toml' if write is spec_text else 'json'}"
    path.write_text(write(zoo.BASES[name]()))
    spec = read_spec_file(path)
    assert spec == zoo.BASES[name]()
    assert repr(spec) == repr(zoo.BASES[name]())  # the same types too: ints stay ints


def test_round_trip_of_a_variant_with_every_optional_field(tmp_path: Path) -> None:
    spec = apply_variant(zoo.mobilenetv2(), "frelu:1,2+flgc-dup:4+cap:0.1")
    text = spec_text(spec)
    assert "block_activations =" not in text and "groups = 4" in text and "duplicate_cap = 0.1" in text
    path = tmp_path / "variant.toml"
    path.write_text(text)
    assert read_spec_file(path) == spec
    masked = spec.with_stages([Stage("dsconv", 1, 3, 1, 64, 3, block_activations=("relu", "frelu", "relu"))])
    path.write_text(spec_text(masked))
    assert 'block_activations = ["relu", "frelu", "relu"]' in path.read_text()
    assert read_spec_file(path) == masked


def test_the_file_says_what_it_is_and_leaves_the_input_to_the_task() -> None:
    text = spec_text(zoo.resnet50())
    assert text.startswith("# resnet50: a scaler network table") and "scaler profile --base FILE" in text
    for field in ("in_channels", "resolution", "num_classes", "resolution_multiple", "None", "null"):
        assert field not in text.split("\n\n", 1)[1]
    assert "[head]" in text and text.count("\n[[stages]]\n") == 4


def test_every_field_of_the_dataclasses_has_a_rule() -> None:
    assert list(specfile.STAGE_RULES) == [item.name for item in fields(Stage)]
    assert list(specfile.STEM_RULES) == [item.name for item in fields(Stem)]
    assert list(specfile.HEAD_RULES) == [item.name for item in fields(Head)]


@pytest.mark.parametrize("name", list(zoo.BASES))
def test_a_file_builds_what_the_zoo_name_builds_on_every_task(tmp_path: Path, name: str) -> None:
    path = tmp_path / "nets" / "mine.toml"
    path.parent.mkdir()
    path.write_text(spec_text(zoo.BASES[name]()))
    for task in ((1, 28, 10), (3, 32, 10), (3, 224, 1000)):
        assert zoo.base(str(path), *task) == zoo.base(name, *task)


def test_names_of_files_and_of_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert zoo.is_spec_file("mine.toml") and zoo.is_spec_file("nets/mine") and zoo.is_spec_file("x.JSON")
    assert not zoo.is_spec_file("mobilenet") and not zoo.is_spec_file("efficientnet-b0")
    assert zoo.base_label("nets/mine.toml") == "mine" and zoo.base_label("my net.json") == "my-net"
    assert zoo.base_label("mobilenet") == "mobilenet"
    monkeypatch.chdir(tmp_path)
    Path("nets").mkdir()
    Path("nets/mine.toml").write_text(spec_text(zoo.mobilenet()))
    assert output_folder(None, "nets/mine.toml", "fashion-mnist", prefix="flgc-").name == "flgc-mine-fashion-mnist"
    assert SearchConfig(base="nets/mine.toml", width=0.25).study_name == "mine-w0.25-fashion-mnist"
    with pytest.raises(zoo.SpecError, match=r"\.toml/\.json"):
        zoo.base("mobilenett")


def test_spec_then_profile_counts_what_the_zoo_name_counts(cli: Cli, tmp_path: Path) -> None:
    status, toml, err = cli(["spec", "--base", "mobilenet"])
    assert status == 0 and not err
    status, as_json, _ = cli(["spec", "--base", "mobilenet", "--json"])
    assert status == 0 and json.loads(as_json) == spec_dict(zoo.mobilenet())
    (tmp_path / "mine.toml").write_text(toml)
    (tmp_path / "mine.json").write_text(as_json)
    measured = {}
    for base in ("mobilenet", str(tmp_path / "mine.toml"), str(tmp_path / "mine.json")):
        status, out, err = cli([*PROFILE, "--base", base])
        assert status == 0, err
        measured[base] = [
            (row["resolution"], row["params"], row["macs"], row["activations"]) for row in json.loads(out)
        ]
    assert len(set(map(tuple, measured.values()))) == 1, measured
    status, again, _ = cli(["spec", "--base", str(tmp_path / "mine.toml")])
    assert status == 0 and again == toml


def mobilenet_data() -> dict[str, Any]:
    """MobileNet's table as a spec file holds it."""
    return spec_dict(zoo.mobilenet())


def edited(change: Change, suffix: str = ".toml") -> Callable[[Path], Path]:
    """A maker of MobileNet's file with `change` applied to its data."""

    def make(folder: Path) -> Path:
        data = copy.deepcopy(mobilenet_data())
        change(data)
        path = folder / f"mine{suffix}"
        path.write_text(json.dumps(data) if suffix == ".json" else toml_text(data))
        return path

    return make


def written(name: str, content: bytes | None) -> Callable[[Path], Path]:
    """A maker of a file `name` holding `content` (a folder when None)."""

    def make(folder: Path) -> Path:
        path = folder / name
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        return path

    return make


def setting(value: Any, *path: str | int) -> Change:
    """Set the field at `path` (keys and stage indices) to `value`."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path
        node: Any = data
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def removing(*path: str | int) -> Change:
    """Remove the field at `path`."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path
        node: Any = data
        for key in parents:
            node = node[key]
        del node[last]

    return change


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing field": (edited(removing("stages", 1, "kernel")), "stages[1]: missing field 'kernel'"),
    "missing stem": (edited(removing("stem")), "missing field 'stem'"),
    "missing stem channels": (edited(removing("stem", "out_channels")), "stem: missing field 'out_channels'"),
    "negative channels": (
        edited(setting(-64, "stages", 0, "out_channels")),
        "stages[0].out_channels must be an integer >= 1 (got -64)",
    ),
    "zero repeats": (edited(setting(0, "stages", 3, "repeats")), "stages[3].repeats must be an integer >= 1 (got 0)"),
    "zero expand": (edited(setting(0, "stages", 0, "expand")), "stages[0].expand must be a number > 0 (got 0)"),
    "string for int": (
        edited(setting("2", "stages", 0, "repeats")),
        'stages[0].repeats must be an integer >= 1 (got "2")',
    ),
    "bool for int": (
        edited(setting(True, "stem", "out_channels")),
        "stem.out_channels must be an integer >= 1 (got true)",
    ),
    "fraction for repeats": (
        edited(setting(2.5, "stages", 2, "repeats")),
        "stages[2].repeats must be an integer >= 1 (got 2.5)",
    ),
    "string for float": (
        edited(setting("6", "stages", 1, "expand")),
        'stages[1].expand must be a number > 0 (got "6")',
    ),
    "unknown field": (
        edited(setting(1, "stages", 0, "repeat")),
        "stages[0]: unknown field 'repeat'; did you mean 'repeats'?",
    ),
    "input field": (edited(setting(32, "resolution")), "unknown field 'resolution' (the input comes from the task"),
    "unknown block": (edited(setting("conv", "stages", 0, "block")), "stages[0].block must be one of dsconv, mbconv"),
    "unknown activation": (edited(setting("gelu", "stages", 4, "activation")), "stages[4].activation must be one of"),
    "unknown net activation": (edited(setting("tanh", "activation")), ": activation must be one of relu"),
    "empty stages": (edited(setting([], "stages"), ".json"), "stages must be a non-empty array of tables"),
    "no stages": (edited(setting([], "stages")), "missing field 'stages'"),
    "even kernel": (edited(setting(4, "stages", 2, "kernel")), "stages[2].kernel must be an odd integer >= 1 (got 4)"),
    "stride 3": (edited(setting(3, "stages", 1, "stride")), "stages[1].stride must be 1 or 2 (got 3)"),
    "se ratio 1": (edited(setting(1.0, "stages", 1, "se_ratio")), "stages[1].se_ratio must be a number in [0, 1)"),
    "negative dropout": (
        edited(setting(-0.1, "head", "dropout")),
        "head.dropout must be a number in [0, 1) (got -0.1)",
    ),
    "head channels": (edited(setting(-1, "head", "out_channels")), "head.out_channels must be an integer >= 0"),
    "zero norm eps": (edited(setting(0, "norm_eps")), "norm_eps must be a number > 0 (got 0)"),
    "infinite expand": (edited(setting(float("inf"), "stages", 0, "expand"), ".json"), "stages[0].expand must be"),
    "stage not a table": (edited(setting(3, "stages", 0), ".json"), "stages[0] must be a table (got 3)"),
    "the stage's own check": (
        edited(setting(["relu", "frelu"], "stages", 0, "block_activations")),
        "stages[0]: block_activations has 2 entries for 1 blocks",
    ),
    "duplicating fixed groups": (
        edited(lambda data: data["stages"][1].update(duplicate=True, grouping="fixed")),
        "stages[1]: only learned (flgc) groups duplicate channels",
    ),
    "not TOML": (written("mine.toml", b"this is = = not toml\n[[["), "mine.toml is not valid TOML: "),
    "not JSON": (written("mine.json", b'{"name": "x",'), "mine.json is not valid JSON: "),
    "JSON list": (written("mine.json", b"[1, 2]"), "mine.json holds a JSON list"),
    "binary": (written("mine.toml", b"\xff\xfe\x00garbage"), "mine.toml is not a text file"),
    "missing file": (lambda folder: folder / "nets" / "mine.toml", "nets/mine.toml: no such network file"),
    "folder": (written("mine.toml", None), "mine.toml is a folder"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_ends_in_one_line_naming_it(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    make, expected = BAD_FILES[case]
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path)
    status, out, err = cli(["profile", "--base", str(path.relative_to(tmp_path)), *PROFILE[1:]])
    assert status == 2 and not out
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert path.name in err and expected in err, err
    assert not (tmp_path / "studies").exists()


def test_a_bad_file_stops_spec_and_search_before_anything_is_written(cli: Cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = edited(setting(4, "stages", 2, "kernel"))(tmp_path)
    for command in (
        ["spec"],
        ["search", "--budget", "60s"],
        ["scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"],
    ):
        status, out, err = cli([*command, "--base", path.name])
        assert status == 2 and not out and err.count("\n") == 1, (command, err)
        assert "mine.toml: stages[2].kernel must be an odd integer >= 1 (got 4)" in err
    assert not (tmp_path / "studies").exists()


def test_the_console_script_prints_one_line_for_a_bad_file(tmp_path: Path) -> None:
    path = edited(setting(1, "stages", 0, "repeat"))(tmp_path)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *PROFILE, "--base", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "scaler: error: mine.toml: stages[0]: unknown field 'repeat'; did you mean 'repeats'?\n"
    assert not (tmp_path / "studies").exists()
