"""Plots: functions take frames and return matplotlib Figures; commands decide where to save."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter


def plain_log_axis(axis: Any) -> None:
    """Log-scale tick labels as plain numbers (10, 20, 50, 100, ...) rather than overlapping 2x10^1 forms."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))


def search_figure(frame: pd.DataFrame, race: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Left: every screened network's accuracy by MACs ratio. Right: the raced networks' means with 95 % CIs,
    the confidence set of the best in blue."""
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    screened = frame[(frame.stage == "screen") & (frame.state == "COMPLETE")]
    if not screened.empty:
        points = left.scatter(screened.macs_ratio, screened.val_acc, c=screened.depth, cmap="viridis", s=45, zorder=3)
        for row in screened.drop_duplicates("network").itertuples():
            left.annotate(
                str(row.network), (row.macs_ratio, row.val_acc), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        fig.colorbar(points, ax=left, label="depth as built / base (blocks)")
        left.set_title(
            f"screen: {screened.network.nunique()} networks x {screened.seed.nunique()} seeds, "
            f"{int(screened.images.iloc[0])} images each",
            fontsize=9,
        )
    else:
        left.set_title("no screen (every feasible network races)", fontsize=9)
    left.set_xlabel("measured MACs ratio φ=1 / φ=0")
    left.set_ylabel("validation accuracy (the screen's seeds)")
    left.grid(alpha=0.3)
    if not race.empty:
        rows = race.iloc[::-1].reset_index(drop=True)
        colours = [
            "tab:gray" if r == "base" else "tab:blue" if best is True else "tab:red"
            for r, best in zip(rows.role, rows.in_best_set)
        ]
        right.errorbar(
            rows.mean_val_acc,
            range(len(rows)),
            xerr=[rows.mean_val_acc - rows.acc_lo, rows.acc_hi - rows.mean_val_acc],
            fmt="none",
            ecolor="k",
            capsize=3,
        )
        right.scatter(rows.mean_val_acc, range(len(rows)), c=colours, s=50, zorder=3)
        right.set_yticks(list(range(len(rows))), [f"{n} ({r})" for n, r in zip(rows.network, rows.role)], fontsize=7)
        right.set_xlabel("mean validation accuracy over the race's seeds, 95 % CI (seeds and images)")
        right.set_title(
            f"best set (blue): {len(summary.get('best_set') or [])}; pick {summary.get('pick')}", fontsize=9
        )
        right.grid(alpha=0.3)
    else:
        right.set_title("the race has not run", fontsize=9)
    fig.suptitle(summary["study"])
    fig.tight_layout()
    return fig


def pareto_mask(cost: pd.Series, value: pd.Series) -> pd.Series:
    """True for points no other point beats: lower-or-equal cost and strictly higher value (or vice versa)."""
    points = list(zip(cost, value))
    flags = []
    for c, v in points:
        dominated = any((c2 <= c and v2 >= v) and (c2 < c or v2 > v) for c2, v2 in points)
        flags.append(not dominated)
    return pd.Series(flags, index=cost.index)


def _xy_panel(ax: Axes, frame: pd.DataFrame, x: str, y: str, accuracy_col: str) -> None:
    """One line per variant; hollow dotted points where accuracy is extrapolated, not measured. On accuracy,
    error bars are the seeds' 95 % interval (acc_lo, acc_hi) and the band is the fit's prediction interval."""
    for name, rows in frame.groupby("variant", sort=False):
        rows = rows.sort_values(x)
        measured = rows[y].notna()
        line = ax.plot(rows[x][measured], rows[y][measured], marker="o", label=str(name))[0]
        shown = rows[y]
        if y == accuracy_col and {"acc_lo", "acc_hi"} <= set(rows) and measured.any():
            low, high = rows.acc_lo[measured], rows.acc_hi[measured]
            ax.errorbar(
                rows[x][measured],
                rows[y][measured],
                yerr=[rows[y][measured] - low, high - rows[y][measured]],
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
                lw=1,
            )
        if y == accuracy_col and {"pred_lo", "pred_hi"} <= set(rows) and rows.pred_lo.notna().any():
            ax.fill_between(rows[x], rows.pred_lo, rows.pred_hi, color=line.get_color(), alpha=0.15, lw=0)
        if y == accuracy_col and "predicted_acc" in rows and (~measured).any():
            shown = rows[y].fillna(rows["predicted_acc"])
            ax.plot(rows[x], shown, ls=":", c=line.get_color())
            ax.scatter(rows[x][~measured], shown[~measured], facecolors="none", edgecolors=line.get_color())
        for phi, xv, yv in zip(rows["phi"], rows[x], shown):
            if pd.notna(yv):
                ax.annotate(f"φ={phi:g}", (xv, yv), fontsize=6, xytext=(3, 3), textcoords="offset points")


def form_of(frame: pd.DataFrame) -> str | None:
    """The latency form a frame's `latency_form` column names, if it has one."""
    if "latency_form" in frame and frame.latency_form.notna().any():
        return str(frame.latency_form.dropna().iloc[0])
    return None


def latency_label(frame: pd.DataFrame, form: str | None = None) -> str:
    """The latency axis's label, naming the runtime that timed it where the frame or caller says."""
    from scaler.study.run import LATENCY_WORDS

    form = form or form_of(frame)
    words = LATENCY_WORDS.get(form or "", form)
    return f"latency, batch 1, {words} (ms)" if words else "latency, batch 1 (ms)"


def tradeoff_figures(
    frame: pd.DataFrame, accuracy_col: str = "test_acc", latency_form: str | None = None
) -> dict[str, Figure]:
    """Accuracy vs MACs, accuracy vs latency, MACs vs latency: one line per (variant, phi) row, φ labels,
    Pareto front; pass `scale.summarise`'s frame for seed intervals and prediction bands. The latency axis names
    the runtime `latency_form` (or the frame's `latency_form` column) timed it in."""
    frame = frame.copy()
    frame["macs_m"] = frame["macs"] / 1e6
    if accuracy_col not in frame:
        frame[accuracy_col] = math.nan
    accuracy = frame[accuracy_col].fillna(frame.get("predicted_acc", frame[accuracy_col]))
    panels = [("macs_vs_latency", "latency_ms", "macs_m")]
    if accuracy.notna().any():  # a profile-only run has nothing to put on an accuracy axis
        panels = [("acc_vs_macs", "macs_m", accuracy_col), ("acc_vs_latency", "latency_ms", accuracy_col), *panels]
    figures = {}
    for name, x, y in panels:
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.subplots()
        _xy_panel(ax, frame, x, y, accuracy_col)
        if y == accuracy_col:
            ok = accuracy.notna()
            front = frame[ok][pareto_mask(frame[x][ok], accuracy[ok])].sort_values(x)
            ax.step(front[x], accuracy[front.index], where="post", c="k", lw=0.8, alpha=0.6, label="Pareto front")
        ax.set_xlabel({"macs_m": "MACs (M, conv+linear, fvcore)", "latency_ms": latency_label(frame, latency_form)}[x])
        ax.set_ylabel({"macs_m": "MACs (M)", accuracy_col: accuracy_col.replace("_", " ")}[y])
        if x == "macs_m":
            ax.set_xscale("log")
            plain_log_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title(name.replace("_", " "))
        fig.tight_layout()
        figures[name] = fig
    return figures


def frelu_figure(frame: pd.DataFrame) -> Figure:
    """Mean validation accuracy (95 % CI over seeds) against latency (IQR) of every FReLU mask; front labelled."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    has_ci = {"acc_lo", "acc_hi"} <= set(frame)
    yerr = [frame.val_acc - frame.acc_lo, frame.acc_hi - frame.val_acc] if has_ci else None
    xerr = frame.latency_iqr_ms / 2 if "latency_iqr_ms" in frame else None
    ax.errorbar(
        frame.latency_ms,
        frame.val_acc,
        xerr=xerr,
        yerr=yerr,
        fmt="o",
        ms=4,
        c="tab:gray",
        lw=0.8,
        alpha=0.7,
        label="mask (95 % CI, latency IQR)",
    )
    front = frame[frame.pareto].sort_values("latency_ms")
    ax.plot(front.latency_ms, front.val_acc, marker="o", c="tab:red", label="Pareto front (means)")
    for _, row in front.iterrows():
        ax.annotate(row["mask"], (row.latency_ms, row.val_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(latency_label(frame))
    ax.set_ylabel("validation accuracy")
    ax.set_title("FReLU placement: one bit per stage (1 = FReLU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_vs_macs(
    frame: pd.DataFrame, group: str, accuracy_col: str = "test_acc", title: str = "", x: str = "macs"
) -> Figure:
    """Accuracy against measured MACs (or their ratio, `x="macs_ratio"`), one line per group (e.g. scaling rule),
    with 95 % CI bars where the frame has acc_lo and acc_hi."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    scale = 1e6 if x == "macs" else 1.0
    for name, rows in frame.groupby(group, sort=False):
        rows = rows.sort_values(x)
        errors = [rows[accuracy_col] - rows.acc_lo, rows.acc_hi - rows[accuracy_col]] if "acc_lo" in rows else None
        ax.errorbar(rows[x] / scale, rows[accuracy_col], yerr=errors, marker="o", capsize=3, label=str(name))
    ax.set_xlabel("MACs (M, conv+linear, fvcore)" if x == "macs" else "measured MACs / base MACs")
    ax.set_ylabel(accuracy_col.replace("_", " ") + (" (mean, 95 % CI)" if "acc_lo" in frame else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def flgc_figure(summary: pd.DataFrame) -> Figure:
    """Left: test accuracy (mean, 95 % CI over seeds) as G grows, per arm. Right: the same accuracies against
    deployed MACs (equal MACs read vertically); untrained, deployed MACs against G. One colour per arm in both."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    trained = "acc_lo" in summary
    dense = summary[summary.arm == "dense"]
    arms = [arm for arm in summary.arm.unique() if arm != "dense"]
    colour = {arm: f"C{i}" for i, arm in enumerate(arms)} | {"dense": "black"}
    for arm, rows in summary.groupby("arm", sort=False):
        rows = rows.sort_values("groups")
        style = {"marker": "o", "label": str(arm), "color": colour[arm]}
        if trained:
            errors = [rows.test_acc - rows.acc_lo, rows.acc_hi - rows.test_acc]
            if arm != "dense":
                left.errorbar(rows.groups, rows.test_acc, yerr=errors, capsize=3, **style)
            right.errorbar(rows.macs / 1e6, rows.test_acc, yerr=errors, capsize=3, **style)
        elif arm != "dense":
            right.plot(rows.groups, rows.macs / 1e6, **style)
    if not dense.empty:
        if trained:
            left.axhline(float(dense.test_acc.iloc[0]), color="black", lw=1, label="dense")
            left.axhspan(float(dense.acc_lo.iloc[0]), float(dense.acc_hi.iloc[0]), color="black", alpha=0.1)
        else:
            right.axhline(float(dense.macs.iloc[0]) / 1e6, color="black", lw=1, label="dense")
    left.set_xlabel("groups G")
    left.set_ylabel("test accuracy (mean, 95 % CI)")
    right.set_xlabel("deployed MACs (M)" if trained else "groups G")
    right.set_ylabel("test accuracy (mean, 95 % CI)" if trained else "deployed MACs (M)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    left.set_title("accuracy as groups grow" if trained else "not trained (--profile-only)")
    right.set_title("accuracy against cost" if trained else "cost of the deployed model")
    fig.tight_layout()
    return fig


def ladder_figure(summary: pd.DataFrame) -> Figure:
    """Left: test accuracy per ladder step (mean, 95 % CI over seeds), gain over the step before annotated.
    Right: latency per step (median, IQR) and train time."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    steps = summary.step.astype(str)
    yerr = [summary.test_acc - summary.acc_lo, summary.acc_hi - summary.test_acc]
    left.errorbar(steps, summary.test_acc, yerr=yerr, fmt="o-", capsize=4)
    for step, acc, gain, low, high in zip(
        steps,
        summary.test_acc,
        summary.get("gain", [None] * len(summary)),
        summary.get("gain_lo", [None] * len(summary)),
        summary.get("gain_hi", [None] * len(summary)),
    ):
        if gain is not None and pd.notna(gain):
            text = f"{100 * gain:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"
            left.annotate(text, (step, acc), fontsize=7, xytext=(4, -12), textcoords="offset points")
    left.set_xlabel("ladder step")
    left.set_ylabel("test accuracy (mean, 95 % CI)")
    left.set_title("each step's gain over the one before (points, paired CI)", fontsize=9)
    left.grid(alpha=0.3)
    right.bar(steps, summary.latency_ms, yerr=summary.latency_iqr_ms / 2, capsize=4, color="tab:gray", label="latency")
    right.set_xlabel("ladder step")
    right.set_ylabel("latency, batch 1 (ms; bar = IQR)")
    twin = right.twinx()
    twin.plot(steps, summary.train_seconds, "o--", c="tab:red")
    twin.set_ylabel("train seconds (mean over seeds)", color="tab:red")
    right.set_title("cost per step", fontsize=9)
    fig.tight_layout()
    return fig
