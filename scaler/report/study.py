"""report.md of a study folder, written from its files alone (the same files give the same text): the commands that
made them, and one section per experiment whose outputs are there, every number read from a CSV or JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from scaler.report.figures import form_of
from scaler.report.held_out import extrapolation_verdict, held_out_of, held_out_table
from scaler.report.tables import markdown
from scaler.study.run import LATENCY_WORDS
from scaler.study.stats import MOST_SEEDS

MANY_SEEDS = 100  # beyond this "to resolve" says only that: the difference is too small to chase with seeds
POWER = 0.8  # what "to resolve" plans for: an 80 % chance that the adjusted interval excludes zero
REPORT = "report.md"


@dataclass(frozen=True)
class Section:
    """One experiment's part of a report: its title, tables and figures, and its verdict sentences."""

    title: str
    parts: list[str]
    verdicts: list[str]


def points(value: Any) -> str:
    """A difference of accuracies in points (x100), signed, two decimals, with a typographic minus."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:+.2f}".replace("-", "−")


def accuracy(row: pd.Series, column: str) -> str:
    """`0.8812 [0.8714, 0.8909]`, or the mean alone where there is no interval."""
    mean, low, high = row.get(column), row.get("acc_lo"), row.get("acc_hi")
    if mean is None or pd.isna(mean):
        return "–"
    if pd.notna(low) and pd.notna(high) and high - low > 1:
        return f"{mean:.4f} ({TOO_FEW})"
    return f"{mean:.4f}" + (f" [{low:.4f}, {high:.4f}]" if pd.notna(low) and pd.notna(high) else "")


TOO_FEW = "too few seeds for an interval"  # one wider than the possible range is not printed


def too_wide(frame: pd.DataFrame) -> bool:
    """Whether any accuracy or difference interval of a race table is wider than its quantity's possible range."""
    widths = [(frame.acc_hi - frame.acc_lo) > 1] if {"acc_lo", "acc_hi"} <= set(frame.columns) else []
    widths += [
        (frame[f"{name}_hi"] - frame[f"{name}_lo"]) > 2
        for name in ("vs_leader", "vs_base", "left")
        if f"{name}_hi" in frame
    ]
    return any(bool(width.any()) for width in widths)


def left_cell(row: pd.Series) -> str:
    """Why a raced network left: the round, the network that beat it, and the deciding interval as computed then."""
    if "left_round" not in row or pd.isna(row.get("left_round")):
        return ""
    low, high = float(row["left_lo"]), float(row["left_hi"])
    interval = TOO_FEW if high - low > 2 else f"[{points(low)}, {points(high)}]"
    return f"round {int(row['left_round'])}: {row['beaten_by']} ahead by {points(row['left_by'])} {interval}"


def family_size(frame: pd.DataFrame, name: str) -> int:
    """How many comparisons a family column holds."""
    return int(frame[name].notna().sum()) if name in frame else 0


def seeds_to_resolve(mean: float, low: float, high: float, seeds: float, family: int) -> int | None:
    """Seeds at which the adjusted interval would exclude zero with 80 % power, if it shrinks as 1/sqrt(seeds) (an
    approximation: the images' share of the variance does not shrink with seeds). None when already resolved."""
    if low > 0 or high < 0 or not seeds or mean == 0:
        return None
    level = stats.norm.ppf(1 - 0.05 / (2 * max(1, family)))
    half = (high - low) / 2
    return math.ceil(seeds * (half * (level + stats.norm.ppf(POWER)) / (level * abs(mean))) ** 2)


def difference(row: pd.Series, name: str, family: int) -> str:
    """`**+1.03 [+0.20, +1.86]**` (bold where significant after the family's adjustment), p_holm, or what it needs."""
    mean = row.get(name)
    if mean is None or pd.isna(mean):
        return "–"
    low, high = float(row[f"{name}_lo"]), float(row[f"{name}_hi"])
    if high - low > 2:
        return f"{points(mean)} ({TOO_FEW})"
    text = f"{points(mean)} [{points(low)}, {points(high)}]"
    significant = bool(low > 0 or high < 0)
    if significant:
        text = f"**{text}**"
    p = row.get(f"{name}_p_holm")
    if p is not None and pd.notna(p):
        text += f" p={p:.3g}"
    if significant:
        return text
    recorded = row.get(f"{name}_seeds_needed")
    if (recorded is None or pd.isna(recorded)) and row.get("seeds", 0) == 1:
        return text + " (one seed: what more seeds would resolve is unknown)"
    if recorded is not None and pd.notna(recorded):
        if math.isinf(recorded):
            return text + " (more images, not seeds)"
        needed: int | None = int(recorded)
    else:
        needed = seeds_to_resolve(mean, low, high, row.get("seeds", 0), family)
    if needed is not None:
        text += f" ({seeds_text(needed)} seeds)"
    return text


def millions(value: Any) -> str:
    """3.48 M."""
    return "–" if value is None or pd.isna(value) else f"{value / 1e6:.2f} M"


def ms(value: Any) -> str:
    """0.55 ms."""
    return "–" if value is None or pd.isna(value) else f"{value:.2f}"


def noise(row: pd.Series) -> str:
    """Seed sd beside the images' floor, in points."""
    sd, floor = row.get("seed_sd"), row.get("floor")
    if sd is None or pd.isna(sd):
        return "–"
    return f"{sd * 100:.2f} / {floor * 100:.2f}" if floor is not None and pd.notna(floor) else f"{sd * 100:.2f} / –"


FAMILY_NOTE = (
    "Where a command kept per-example outputs (`<command>_examples.npz`), its table is recomputed here from its "
    "runs and those outputs by the current statistics; otherwise it is the summary CSV as written. "
    "Differences are in points, paired seed by seed and image by image where the runs kept per-example outputs "
    "(else by seed); each column is one family: its intervals are simultaneous (Bonferroni) and p is "
    "Holm-adjusted (files older than that adjustment say so under their table); **bold** = the interval excludes "
    "zero; (≈n seeds) = the seeds at which it would with 80 % power if the difference stayed (the seeds' part of "
    "the variance shrinks, the images' part does not; files without per-example outputs: the whole interval "
    "shrinks as 1/√seeds), (more images, not seeds) = no number of seeds would. Noise = the seeds' sd of "
    "accuracy / the floor the test images alone explain (binomial), in points."
)


def family_verdict(frame: pd.DataFrame, name: str, label: Callable[[pd.Series], str], what: str) -> str:
    """One sentence: which comparisons of a family are significant (after adjustment, where the file has it)."""
    if name not in frame or not frame[name].notna().any():
        return ""
    present = frame[frame[name].notna()]
    significant = present[(present[f"{name}_lo"] > 0) | (present[f"{name}_hi"] < 0)]
    listed = ", ".join(f"{label(row)} {points(row[name])}" for _, row in significant.iterrows())
    how = "after adjustment" if f"{name}_p_holm" in frame else UNADJUSTED
    verdict = f"{what}: {len(significant)} of {len(present)} significant {how}" + (f" ({listed})" if listed else "")
    return verdict + unresolved(present.drop(significant.index), name, everyone=significant.empty) + "."


def unresolved(rest: pd.DataFrame, name: str, everyone: bool = False) -> str:
    """`; to resolve the other 11: ≈4 to >100 seeds (1 only with more images) if the differences held`, from the
    recorded seeds-needed column ("" without one)."""
    column = f"{name}_seeds_needed"
    if rest.empty or column not in rest or rest[column].isna().all():
        return ""
    needed = rest[column].dropna()
    seeds = needed[needed.map(math.isfinite)]
    images = len(needed) - len(seeds)
    say = ""
    if len(seeds):
        low, high = seeds_text(seeds.min()), seeds_text(seeds.max())
        say = f"{low} seeds" if low == high else f"{low} to {high} seeds"
    if images:
        say += f" ({images} only with more images)" if say else "more images, not seeds"
    which = "them" if everyone else f"the other {len(rest)}"
    return f"; to resolve {which}: {say}" + (" if the differences held" if len(seeds) else "")


def seeds_text(needed: float) -> str:
    """≈12, or >100 past the seeds the statistics try."""
    return f"≈{needed:.0f}" if needed <= MANY_SEEDS else f">{MANY_SEEDS}"


UNADJUSTED = (
    "by per-comparison 95 % t intervals over seeds, without family adjustment (the file predates it: rerun the "
    "command to regenerate it)"
)


def summary_of(folder: Path, command: str, name: str) -> tuple[pd.DataFrame, str]:
    """A command's summary table and the file it comes from: recomputed by the current statistics from its runs
    (`<name>.csv`) and their per-example outputs (`<command>_examples.npz`) where the folder has them, else
    `<name>_summary.csv` as written."""
    runs, outputs = folder / f"{name}.csv", folder / f"{command}_examples.npz"
    if runs.exists() and outputs.exists():
        from scaler.experiments import compare, flgc, ladder, scale
        from scaler.study.examples import Examples

        summarise = {
            "ladder": ladder.summarise,
            "compare-scaling": compare.summarise,
            "scale": scale.summarise,
            "flgc": flgc.summarise,
        }[command]
        return summarise(pd.read_csv(runs), Examples.load(outputs)), runs.name
    return pd.read_csv(folder / f"{name}_summary.csv"), f"{name}_summary.csv"


Column = tuple[str, Callable[[pd.Series], str]]


def family_cell(name: str, family: int) -> Callable[[pd.Series], str]:
    """The cell of one family's difference in a row (`difference`)."""
    return lambda row: difference(row, name, family)


def compared(
    frame: pd.DataFrame,
    leading: list[Column],
    families: list[tuple[str, str, str]],
    label: Callable[[pd.Series], str],
    trailing: Sequence[Column] = (),
) -> tuple[str, list[str]]:
    """A summary's table (its leading columns, test accuracy and noise, one column per family of differences given
    as (column, header, what the verdict calls it), its trailing columns) and each family's verdict."""
    sizes = {name: family_size(frame, name) for name, _, _ in families}
    columns: list[Column] = [*leading, ("test acc [95 %]", lambda row: accuracy(row, "test_acc")), ("noise", noise)]
    columns += [(header, family_cell(name, sizes[name])) for name, header, _ in families]
    columns += trailing
    rows = [[cell(row) for _, cell in columns] for _, row in frame.iterrows()]
    verdicts = [family_verdict(frame, name, label, what) for name, _, what in families]
    return markdown(rows, [header for header, _ in columns]), verdicts


def ladder_section(folder: Path) -> Section:
    """The FReLU research ladder."""
    frame, source = summary_of(folder, "ladder", "ladder")
    table, verdicts = compared(
        frame,
        [("step", lambda row: str(row.step)), ("network", lambda row: str(row.description))],
        [
            ("gain", "gain over the step before", "Ladder, gains over the step before"),
            ("vs_base", "vs step 0", "Ladder, differences to step 0"),
        ],
        lambda row: f"step {row.step}",
        [
            ("MACs", lambda row: millions(row.macs)),
            ("train time", lambda row: f"{row.train_seconds:.1f} s"),
            ("latency ms (IQR)", lambda row: f"{ms(row.latency_ms)} ({ms(row.latency_iqr_ms)})"),
        ],
    )
    return Section(f"The FReLU research ladder (`{source}`)", [table], verdicts)


def compare_section(folder: Path) -> Section:
    """Scaling rules at equal FLOPs."""
    frame, source = summary_of(folder, "compare-scaling", "compare_scaling")
    table, verdicts = compared(
        frame,
        [
            ("rule", lambda row: str(row.rule)),
            ("FLOPs target", lambda row: f"×{row.factor:g}"),
            ("MACs as built", lambda row: f"×{row.macs_ratio:.2f}"),
        ],
        [
            ("vs_compound", "vs compound", "Scaling rules against compound scaling at the same FLOPs target"),
            ("vs_base", "vs base", "Scaling rules against the base"),
        ],
        lambda row: f"{row.rule} ×{row.factor:g}",
    )
    return Section(f"Scaling rules at equal FLOPs (`{source}`)", [table], verdicts)


def scale_section(folder: Path) -> Section:
    """Variants carried to larger phi, and the held-out extrapolation."""
    frame, _ = summary_of(folder, "scale", "scale")
    rows = [
        [
            str(row.variant),
            f"{row.phi:g}",
            millions(row.macs),
            f"{int(row.seeds)}" if pd.notna(row.get("seeds")) else "0",
            accuracy(row, "test_acc"),
            noise(row),
            f"{row.predicted_acc:.4f} [{row.pred_lo:.4f}, {row.pred_hi:.4f}]" if pd.notna(row.get("pred_lo")) else "–",
            f"{ms(row.latency_ms)} ({ms(row.latency_iqr_ms)})",
        ]
        for _, row in frame.iterrows()
    ]
    header = [
        "variant",
        "φ",
        "MACs",
        "seeds",
        "test acc [95 %]",
        "noise",
        "fit's prediction [95 %]",
        "latency ms (IQR)",
    ]
    parts, verdicts = [markdown(rows, header)], []
    runs = pd.read_csv(folder / "scale.csv") if (folder / "scale.csv").exists() else pd.DataFrame()
    if (form := form_of(runs)) is not None:
        parts.append(
            f"Latency: batch 1, in {LATENCY_WORDS.get(form, form)}, every network timed interleaved in one run."
        )
    figures = [name for name in ("acc_vs_macs.png", "acc_vs_latency.png") if (folder / name).exists()]
    parts += [f"![{name}]({name})" for name in figures]
    held = held_out_of(folder, runs)
    if held is not None:
        parts.append("Held-out extrapolation (`extrapolation.csv`):\n\n" + held_out_table(held))
        verdicts.append(extrapolation_verdict(held))
    return Section("Variants across φ (`scale_summary.csv`)", parts, verdicts)


def frelu_section(folder: Path) -> Section:
    """FReLU placement, analysed from frelu.csv's per-seed accuracies as `scaler frelu` analyses them: the
    factorial's stage effects, the front against ReLU (one family), the verdict."""
    from scaler.experiments.frelu import factorial, recommend

    parts = ["![validation accuracy vs deployed latency of the masks](frelu_pareto.png)"]
    parts = parts if (folder / "frelu_pareto.png").exists() else []
    frame = pd.read_csv(folder / "frelu.csv", dtype={"mask": str})
    effects, interactions = factorial(frame)
    effects["seeds"] = len(str(frame.val_accs.iloc[0]).split())
    family = len(effects) + len(interactions)
    rows = [
        [
            str(row.stage),
            difference(row.rename({"d_val_acc": "d", "d_val_acc_lo": "d_lo", "d_val_acc_hi": "d_hi"}), "d", family),
            f"{row.p:.3g}",
            f"{row.p_holm:.3g}",
            f"{row.latency_ratio:.2f}",
        ]
        for _, row in effects.iterrows()
    ]
    significant = int(interactions.significant.sum()) if len(interactions) else 0
    parts.append(
        f"Main effects of FReLU per stage on validation accuracy ({len(frame)} masks as a factorial with seed "
        f"blocks; {int(effects.dof.iloc[0])} residual degrees of freedom, residual sd "
        f"{effects.residual_sd.iloc[0] * 100:.2f} points; intervals simultaneous over the {len(effects)} main "
        f"effects and {len(interactions)} two-stage interactions, of which {significant} significant):\n\n"
        + markdown(rows, ["stage", "effect, points [simultaneous 95 %]", "p", "p Holm", "latency ratio"])
    )
    front, sentence = recommend(frame)
    gains = family_size(front, "vs_relu")
    rows = [
        [
            str(row["mask"]),
            f"{row.latency_ms:.2f} ({row.latency_vs_relu:.2f}×)",
            f"{row.val_acc:.4f}",
            difference(row, "vs_relu", gains) if "vs_relu" in front else "–",
            "yes" if row.in_best_set_within else "no",
        ]
        for _, row in front.iterrows()
    ]
    header = ["mask (stages 1..k)", "latency ms (× ReLU)", "val acc", "vs ReLU", "in the best set within its latency"]
    parts.append("The Pareto front (computed from `frelu.csv`):\n\n" + markdown(rows, header))
    return Section("Which stages get FReLU (`frelu.csv`)", parts, [f"FReLU placement: {sentence}."])


def flgc_section(folder: Path) -> Section:
    """Every arm against dense, dense-thin at equal MACs and plain FLGC."""
    frame, source = summary_of(folder, "flgc", "flgc")
    table, verdicts = compared(
        frame,
        [
            ("arm", lambda row: str(row.arm)),
            ("G", lambda row: str(row.groups)),
            ("MACs", lambda row: millions(row.macs)),
        ],
        [
            family
            for family in (
                ("vs_dense", "vs dense", "Arms against dense"),
                ("vs_thin", "vs dense-thin (equal MACs)", "Arms against dense thinned to FLGC's MACs at the same G"),
                ("vs_flgc", "vs FLGC at the same G", "Arms against plain FLGC at the same G"),
            )
            if family[0] in frame
        ],
        lambda row: f"{row.arm} G={row.groups}",
        [
            ("moved", moved_share),
            ("maps duplicated", duplicated_maps),
            ("latency ms", lambda row: ms(row.get("latency_ms"))),
        ],
    )
    parts = [table]
    if "dup_val_change" in frame and frame.dup_val_change.notna().any():
        change = frame.dup_val_change.dropna()
        parts.append(
            "Duplication adds its maps with their new connections at zero: the largest change of validation "
            f"accuracy across it, over every flgc-dup run, is {100 * change.abs().max():.2f} points."
        )
    if "latency_spread" in frame and frame.latency_spread.notna().any():
        parts.append(
            "Batch-1 latency (`latency_ms`, the deployed network) is timed once per run, after its training: across "
            f"the seeds of one arm and G it spreads by up to {100 * frame.latency_spread.max():.0f} % of its median: "
            "read smaller latency differences as noise. `benchmarks/flgc_deploy.py` times the forms side by side."
        )
    if (folder / "flgc.png").exists():
        parts.append("![accuracy and deployed MACs against G](flgc.png)")
    return Section(f"FLGC (`{source}`)", parts, verdicts)


def moved_share(row: pd.Series) -> str:
    """The share of an FLGC arm's channels and filters that left their starting group by the freeze ("–" for arms
    that learn no grouping)."""
    if not str(row.arm).startswith("flgc") or pd.isna(row.get("moved")):
        return "–"
    return f"{100 * row.moved:.2f} %"


def duplicated_maps(row: pd.Series) -> str:
    """Feature maps duplication added, on average over the seeds ("–" for none)."""
    added = row.get("duplicated")
    return f"{added:.0f}" if pd.notna(added) and added > 0 else "–"


def search_section(folder: Path) -> Section:
    """The search's answer, as summary.json and race.csv hold it."""
    summary = json.loads((folder / "summary.json").read_text())
    if "best_set" not in summary:
        return Section(
            "The search (`summary.json`)",
            ["Made by a search before racing (a fixed confirmation): rerun `scaler search` for a best set."],
            [],
        )
    plan = summary.get("plan") or {}
    facts = {
        "budget": f"{summary['budget_seconds'] / 60:.1f} min, {summary['wall_seconds'] / 60:.1f} min used",
        "plan": f"screen on {plan.get('screen_images')} images per network, race on {plan.get('race_images')}",
        **({"fidelity": summary["fidelity"]["verdict"]} if summary.get("fidelity") else {}),
        "screened out": ", ".join(summary.get("screened_out") or {}) or "none",
        "race": f"{len(summary.get('rounds') or [])} round(s); {summary.get('race_end') or 'not over'}",
        "best set (95 %)": ", ".join(summary["best_set"]),
        "pick": f"{summary['pick']} ({summary['pick_rule']})",
        "α, β, γ exported": f"{summary['alpha']}, {summary['beta']}, {summary['gamma']}",
        "class": class_text(summary.get("class") or {}),
        "pick test accuracy": accuracy_text(summary.get("pick_test_acc"), summary.get("pick_test_ci95")),
    }
    if summary.get("disambiguation"):
        facts["disambiguation"] = (
            disambiguation_text(summary["disambiguation"]).removeprefix("disambiguation").lstrip(": ")
        )
    parts = ["\n".join(f"- {key}: {value}" for key, value in facts.items())]
    if (folder / "race.csv").exists():
        race = pd.read_csv(folder / "race.csv")
        sizes = {name: family_size(race, name) for name in ("vs_leader", "vs_base")}
        columns: list[Column] = [
            ("network", lambda row: str(row.network)),
            ("role", lambda row: str(row.role)),
            ("seeds", lambda row: str(row.seeds)),
            ("val acc [95 %]", lambda row: accuracy(row, "mean_val_acc")),
            ("noise", noise),
            ("vs leader", family_cell("vs_leader", sizes["vs_leader"])),
            ("vs base", family_cell("vs_base", sizes["vs_base"])),
            ("best set", lambda row: {True: "yes", False: "no"}.get(row.in_best_set, "")),
            ("MACs", lambda row: millions(row.macs)),
        ]
        if "left_round" in race:
            columns.insert(-1, ("left the race", left_cell))
        rows = [[cell(row) for _, cell in columns] for _, row in race.iterrows()]
        parts.append(markdown(rows, [header for header, _ in columns]))
        parts.append(
            "Validation images, as the race saw them; noise = the seeds' sd / the validation images' floor"
            + ("; an interval wider than its quantity's possible range is not printed." if too_wide(race) else ".")
        )
        if summary.get("race_rule"):
            parts.append(
                f"Race rule: {summary['race_rule']} (each look at {summary['look_confidence']:.4f}). `left the race` "
                "gives, for each network that left, the round whose look decided, the network that beat it and the "
                "interval that decided, as computed then; `vs leader` compares with the final leader on all seeds."
            )
    if (folder / "search.png").exists():
        parts.append("![the screen and the race](search.png)")
    verdicts = [
        f"Search ({summary['budget_seconds'] / 60:.0f}-min budget, {summary['wall_seconds'] / 60:.1f} min wall; "
        f"{len(summary.get('screened_out') or {})} of {summary['feasible']} networks out at the screen, "
        f"{len(summary.get('rounds') or [])} race rounds): best set {', '.join(summary['best_set'])}; pick "
        f"{summary['pick']} (α, β, γ = {summary['alpha']}, {summary['beta']}, {summary['gamma']}), test accuracy "
        f"{accuracy_text(summary.get('pick_test_acc'), summary.get('pick_test_ci95'))}. "
        + gain_text(summary.get("vs_base"))
        + next_budget_text(summary.get("next_budget"))
        + (f" {capitalised(disambiguation_text(summary['disambiguation']))}." if summary.get("disambiguation") else "")
    ]
    if summary.get("fidelity"):
        verdicts.append(f"Fidelity: {summary['fidelity']['verdict']}.")
    return Section("The search (`summary.json`, `race.csv`)", parts, verdicts)


def disambiguation_text(settled: dict[str, Any]) -> str:
    """One line on what --disambiguate-phi settled."""
    at = f"phi={settled['phi']:g}"
    if settled["distinct"] == 1:
        return f"disambiguation: the class builds one network at {at}; nothing to settle"
    measured = ", ".join(
        f"{row['member']} {row['val_acc']:.4f} [{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}] ({row['seeds']} seeds, "
        f"{row['macs'] / 1e6:.1f} M MACs)"
        for row in settled["networks"]
        if "val_acc" in row
    )
    if not settled["best_set"]:
        return (
            f"disambiguation at {at}: not raced ({settled['end'] or 'not started'}); exporting the class's label "
            f"{settled['exported']}"
        )
    return (
        f"disambiguation at {at} of {settled['distinct']} distinct networks: {measured}; best set "
        f"{', '.join(settled['best_set'])}; exported {settled['exported']} ({settled['end'] or 'not over'})"
    )


def capitalised(text: str) -> str:
    """`text` with its first letter in upper case."""
    return text[:1].upper() + text[1:]


def next_budget_text(more: dict[str, Any] | None) -> str:
    """What more budget would separate the best set, as the summary measured it."""
    if not more:
        return ""
    if more.get("seeds") and more["seeds"] > MOST_SEEDS:
        return (
            f" To separate the best set: more than {MOST_SEEDS} seeds per network; at this fidelity its members are "
            "as good as one another."
        )
    if more.get("seeds"):
        text = (
            f" To separate the best set: ≈{more['seeds']} seeds per network ({more['trainings']} more trainings, "
            f"≈{more['minutes']:.0f} min)"
        )
        return text + (f"; {', '.join(more['unresolvable'])} need more images." if more["unresolvable"] else ".")
    if more.get("unresolvable"):
        return f" {', '.join(more['unresolvable'])} cannot be told from the leader by more seeds: more images."
    return ""


def class_text(klass: dict[str, Any]) -> str:
    """The α, β, γ ranges that build the pick, and the member exported."""
    if not klass:
        return "–"
    ranges = ", ".join(
        f"{name} {klass[name][0]:.2f}" + (f"–{klass[name][1]:.2f}" if klass[name][1] != klass[name][0] else "")
        for name in ("alpha", "beta", "gamma")
    )
    return f"{ranges} ({len(klass['members'])} members); exported {klass['exported']}"


def accuracy_text(mean: float | None, interval: list[float] | None) -> str:
    """0.8812 [0.8790, 0.8834], or – ."""
    if mean is None:
        return "–"
    return f"{mean:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def gain_text(gain: dict[str, Any] | None) -> str:
    """The pick against the base on the test images, and what an unresolved one needs."""
    if not gain:
        return "No test comparison with the base yet."
    low, high = gain["ci95"]
    text = (
        f"Pick minus base on the test images: {points(gain['mean'])} [{points(low)}, {points(high)}] points over "
        f"{gain['seeds']} paired seeds: "
    )
    if gain["significant"]:
        return text + "significant."
    return text + f"not significant (needs {gain.get('seeds_needed')} seeds)."


SECTIONS: list[tuple[str, Callable[[Path], Section]]] = [
    ("summary.json", search_section),
    ("scale_summary.csv", scale_section),
    ("ladder_summary.csv", ladder_section),
    ("frelu.csv", frelu_section),
    ("compare_scaling_summary.csv", compare_section),
    ("flgc_summary.csv", flgc_section),
]


def commands(folder: Path) -> str:
    """The commands that made the folder's files, from run.json (the latest and the earlier ones it lists)."""
    path = folder / "run.json"
    if not path.exists():
        return "No `run.json`: the commands that made these files are not recorded."
    record = json.loads(path.read_text())
    runs = [*record.get("earlier", []), record]
    lines = []
    for run in runs:
        commit = (run.get("git_commit") or "unknown")[:10] + (" (uncommitted changes)" if run.get("git_dirty") else "")
        outputs = ", ".join(f"`{name}`" for name in run.get("outputs", []))
        lines.append(f"- `{run.get('command')}` at {commit}, {run.get('started')} → {run.get('ended')}: {outputs}")
    device = record.get("device")
    return "Made by (`run.json`" + (f"; {device}" if device else "") + "):\n\n" + "\n".join(lines)


def sections(folder: Path, only: str | None = None) -> list[Section]:
    """The sections whose files the folder holds, in a fixed order (`only`: the one made from that file)."""
    return [section(folder) for name, section in SECTIONS if (folder / name).exists() and only in (None, name)]


def study_report(folder: Path) -> str:
    """The whole report.md of a study folder: the commands, the verdicts, then one section per experiment."""
    found = sections(folder)
    head = [f"# {folder.name}", "Generated by `scaler report` from this folder's files; do not edit.", commands(folder)]
    head.append("## Summary\n\n" + study_summary(found))
    head.append(FAMILY_NOTE)
    body = ["\n\n".join([f"## {section.title}", *section.parts, *section.verdicts]) for section in found]
    return "\n\n".join([*head, *body]) + "\n"


def study_summary(found: list[Section]) -> str:
    """One bullet per verdict of every section: what the README shows of a study."""
    return "\n".join(f"- {verdict}" for section in found for verdict in section.verdicts if verdict)


def refreshed_readme(text: str, root: Path) -> str:
    """`text` with its generated blocks made again from the files: between `<!-- summary: studies/NAME -->` and
    `<!-- /summary -->` the study's summary (and a link to its report.md; `<!-- summary: studies/NAME FILE -->`:
    only the section made from FILE, e.g. summary.json for the search); between `<!-- tail: PATH N -->` and
    `<!-- /tail -->` the last N lines of the file at PATH (a benchmark's output), verbatim in a code block."""
    summary = re.compile(r"(<!-- summary: (studies/[\w.-]+)(?: ([\w.]+))? -->\n)(.*?)(<!-- /summary -->)", re.DOTALL)
    tail = re.compile(r"(<!-- tail: ([\w./-]+) (\d+) -->\n)(.*?)(<!-- /tail -->)", re.DOTALL)

    def study_block(match: re.Match[str]) -> str:
        folder = root / match.group(2)
        link = f"Full report: [`{match.group(2)}/{REPORT}`]({match.group(2)}/{REPORT})."
        return f"{match.group(1)}{study_summary(sections(folder, match.group(3)))}\n\n{link}\n{match.group(5)}"

    def tail_block(match: re.Match[str]) -> str:
        lines = (root / match.group(2)).read_text().splitlines()[-int(match.group(3)) :]
        return match.group(1) + "```\n" + "\n".join(lines) + "\n```\n" + match.group(5)

    return tail.sub(tail_block, summary.sub(study_block, text))
