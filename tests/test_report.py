"""report.md and the README's study summaries are generated from the study files, identically every time."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from scaler.cli import main
from scaler.report.study import REPORT, SECTIONS, family_verdict, refreshed_readme, seeds_to_resolve, study_report

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(
    folder for folder in (ROOT / "studies").iterdir() if any((folder / name).exists() for name, _ in SECTIONS)
)


@pytest.mark.parametrize("folder", COMMITTED, ids=[folder.name for folder in COMMITTED])
def test_every_committed_report_is_what_its_files_give(folder: Path) -> None:
    assert (folder / REPORT).read_text() == study_report(folder), f"rerun: scaler report --study {folder.name}"


def test_the_readme_study_summaries_are_what_the_files_give() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"<!-- summary: studies/([\w.-]+)", readme))
    assert named == {folder.name for folder in COMMITTED} and "<!-- tail: benchmarks/results/" in readme
    assert refreshed_readme(readme, ROOT) == readme, "rerun: scaler report --study NAME --readme README.md"


def ladder(folder: Path) -> None:
    """A ladder summary as the engine writes it: adjusted families, Holm p, seeds' sd beside the floor."""
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "step": [0, 1, 2],
            "description": ["mobilenet", "+ compound", "+ fused"],
            "seeds": [3, 3, 3],
            "test_acc": [0.80, 0.83, 0.805],
            "acc_lo": [0.79, 0.82, 0.79],
            "acc_hi": [0.81, 0.84, 0.82],
            "seed_sd": [0.004, 0.005, 0.004],
            "floor": [0.004, 0.0038, 0.004],
            "gain": [None, 0.03, -0.025],
            "gain_lo": [None, 0.02, -0.06],
            "gain_hi": [None, 0.04, 0.01],
            "gain_p": [None, 0.0001, 0.2],
            "gain_p_holm": [None, 0.0002, 0.2],
            "gain_significant": [None, True, False],
            "train_seconds": [10.0, 20.0, 30.0],
            "macs": [3.48e6, 7.2e6, 10.4e6],
            "latency_ms": [0.5, 0.6, 0.7],
            "latency_iqr_ms": [0.05, 0.05, 0.06],
        }
    ).to_csv(folder / "ladder_summary.csv", index=False)


def test_report_marks_the_adjusted_verdicts_and_what_an_unresolved_one_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    ladder(tmp_path / "studies" / "lad")
    assert main(["report", "--study", "lad"]) == 0
    text = (tmp_path / "studies" / "lad" / REPORT).read_text()
    assert "**+3.00 [+2.00, +4.00]** p=0.0002" in text
    assert "−2.50 [−6.00, +1.00] p=0.2 (≈" in text  # not significant: the seeds it would take
    assert "Ladder, gains over the step before: 1 of 2 significant after adjustment (step 1 +3.00)." in text
    assert "| 0.40 / 0.40 |" in text  # seeds' sd beside the floor, in points
    assert "No `run.json`" in text
    assert main(["report", "--study", "lad", "--check"]) == 0
    (tmp_path / "studies" / "lad" / REPORT).write_text(text.replace("+3.00", "+3.10"))
    assert main(["report", "--study", "lad", "--check"]) == 1
    assert "is not what its files give" in capsys.readouterr().out


def test_report_refuses_a_folder_without_results_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "empty").mkdir(parents=True)
    for study in ("absent", "../x", "empty"):
        assert main(["report", "--study", study]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "holds no results" in errors[-1]
    assert not (tmp_path / "studies" / "empty" / REPORT).exists()


def test_seeds_to_resolve_grows_as_the_effect_shrinks() -> None:
    assert seeds_to_resolve(0.01, 0.02, 0.03, 3, 1) is None  # already resolved
    small, smaller = seeds_to_resolve(0.01, -0.01, 0.03, 3, 1), seeds_to_resolve(0.005, -0.015, 0.025, 3, 1)
    assert small is not None and smaller is not None and 3 < small < smaller


def test_a_verdict_says_what_its_unresolved_comparisons_would_need() -> None:
    frame = pd.DataFrame(
        {
            "step": [1, 2, 3, 4],
            "d": [0.02, 0.004, 0.001, 0.01],
            "d_lo": [0.01, -0.01, -0.02, -0.01],
            "d_hi": [0.03, 0.01, 0.02, 0.03],
            "d_p_holm": [0.001, 0.5, 0.9, 0.3],
            "d_seeds_needed": [float("nan"), 12.0, float("inf"), 101.0],
        }
    )
    verdict = family_verdict(frame, "d", lambda row: f"step {row.step:.0f}", "Steps")
    assert verdict == (
        "Steps: 1 of 4 significant after adjustment (step 1 +2.00); to resolve the other 3: ≈12 to >100 seeds "
        "(1 only with more images) if the differences held."
    )
    unresolved = frame.iloc[1:].assign(d_seeds_needed=[float("inf")] * 3)
    assert family_verdict(unresolved, "d", str, "Steps") == (
        "Steps: 0 of 3 significant after adjustment; to resolve them: more images, not seeds."
    )


def test_readme_blocks_quote_files_verbatim_and_a_missing_one_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ladder(tmp_path / "studies" / "lad")
    (tmp_path / "out.txt").write_text("first\nsecond\nthird\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "x\n<!-- tail: out.txt 2 -->\nold\n<!-- /tail -->\n<!-- summary: studies/lad -->\n<!-- /summary -->\n"
        "<!-- summary: studies/lad summary.json -->\n<!-- /summary -->\n"
    )
    assert main(["report", "--study", "lad", "--readme", "README.md"]) == 0
    text = readme.read_text()
    assert "<!-- tail: out.txt 2 -->\n```\nsecond\nthird\n```\n<!-- /tail -->" in text
    assert "- Ladder, gains over the step before: 1 of 2 significant after adjustment" in text
    assert "<!-- summary: studies/lad summary.json -->\n\n\nFull report" in text, "a block of one file's section"
    assert main(["report", "--study", "lad", "--readme", "README.md"]) == 0 and readme.read_text() == text
    (tmp_path / "studies" / "lad" / REPORT).unlink()
    readme.write_text(text.replace("out.txt", "gone.txt"))
    assert main(["report", "--study", "lad", "--readme", "README.md"]) == 2
    assert not (tmp_path / "studies" / "lad" / REPORT).exists()


def test_race_rows_say_why_a_network_left_and_never_print_an_interval_wider_than_possible() -> None:
    from scaler.report.study import TOO_FEW, accuracy, difference, left_cell

    left = pd.Series(
        {"left_round": 2.0, "beaten_by": "a1.00_b1.40_g1.00", "left_by": 0.0123, "left_lo": 0.004, "left_hi": 0.0206}
    )
    assert left_cell(left) == "round 2: a1.00_b1.40_g1.00 ahead by +1.23 [+0.40, +2.06]"
    assert left_cell(pd.Series({"left_round": float("nan")})) == ""
    wide = pd.Series({"vs_leader": -0.3845, "vs_leader_lo": -6.6927, "vs_leader_hi": 5.9237, "seeds": 2})
    assert difference(wide, "vs_leader", 3) == f"−38.45 ({TOO_FEW})"
    assert accuracy(pd.Series({"acc": 0.5, "acc_lo": -0.2, "acc_hi": 1.2}), "acc") == f"0.5000 ({TOO_FEW})"
