"""Plots: functions take frames and return matplotlib Figures; commands decide where to save."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter


def plain_log_axis(axis: Any) -> None:
    """Log-scale tick labels as plain numbers (10, 20, 50, 100, ...) rather than overlapping 2x10^1 forms."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))


def search_figure(frame: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Validation accuracy of every candidate (pruned hollow, infeasible as x), best starred."""
    frame = frame.dropna(subset=["alpha"]).sort_values(["alpha", "beta", "gamma"]).reset_index(drop=True)
    labels = [f"{a:.2f}/{b:.2f}/{g:.2f}" for a, b, g in zip(frame.alpha, frame.beta, frame.gamma)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(frame) + 2), 4.2))
    x = range(len(frame))
    feasible = (frame.constraint <= 0).to_numpy()
    done = (frame.state == "COMPLETE").to_numpy() & feasible
    pruned = (frame.state == "PRUNED").to_numpy()
    acc = frame.val_acc.fillna(0).to_numpy()
    floor = acc[done | pruned].min() - 0.01 if (done | pruned).any() else 0.0
    scatter = ax.scatter(
        [i for i in x if done[i]], acc[done], c=frame.macs_ratio[done], cmap="viridis", s=45, label="trained", zorder=3
    )
    ax.scatter(
        [i for i in x if pruned[i]],
        acc[pruned],
        facecolors="none",
        edgecolors="tab:gray",
        s=45,
        label="pruned (last epoch)",
    )
    ax.scatter(
        [i for i in x if not feasible[i]],
        [floor] * int((~feasible).sum()),
        marker="x",
        c="tab:red",
        label="infeasible MACs ratio",
    )
    best = [
        i
        for i in x
        if done[i]
        and frame.alpha[i] == summary["alpha"]
        and frame.beta[i] == summary["beta"]
        and frame.gamma[i] == summary["gamma"]
    ]
    if best:
        ax.scatter(best, acc[best], marker="*", s=300, c="tab:orange", edgecolors="k", zorder=4, label="best")
    reference = summary.get("reference") or {}
    if "val_acc" in reference:
        ax.axhline(reference["val_acc"], ls="--", c="k", lw=1, label="base φ=0")
    if done.any():
        fig.colorbar(scatter, ax=ax, label="measured MACs ratio φ=1 / φ=0")
    ax.set_xticks(list(x), labels, rotation=70, fontsize=7)
    ax.set_xlabel("candidate α/β/γ")
    ax.set_ylabel("validation accuracy")
    best_text = (
        f"best α={summary['alpha']}, β={summary['beta']}, γ={summary['gamma']}"
        if summary["alpha"]
        else "no feasible trial trained yet"
    )
    ax.set_title(f"{summary['study']}: {best_text}")
    ax.legend(fontsize=7, loc="lower right")
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


def _xy_panel(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, accuracy_col: str) -> None:
    """One line per variant; hollow dotted points where accuracy is extrapolated, not measured."""
    for name, rows in frame.groupby("variant", sort=False):
        rows = rows.sort_values(x)
        measured = rows[y].notna()
        line = ax.plot(rows[x][measured], rows[y][measured], marker="o", label=str(name))[0]
        shown = rows[y]
        if y == accuracy_col and "predicted_acc" in rows and (~measured).any():
            shown = rows[y].fillna(rows["predicted_acc"])
            ax.plot(rows[x], shown, ls=":", c=line.get_color())
            ax.scatter(rows[x][~measured], shown[~measured], facecolors="none", edgecolors=line.get_color())
        for phi, xv, yv in zip(rows["phi"], rows[x], shown):
            if pd.notna(yv):
                ax.annotate(f"φ={phi:g}", (xv, yv), fontsize=6, xytext=(3, 3), textcoords="offset points")


def tradeoff_figures(frame: pd.DataFrame, accuracy_col: str = "test_acc") -> dict[str, Figure]:
    """Accuracy vs MACs, accuracy vs latency, MACs vs latency: one line per variant, φ labels, Pareto front."""
    frame = frame.copy()
    frame["macs_m"] = frame["macs"] / 1e6
    figures = {}
    for name, x, y in (
        ("acc_vs_macs", "macs_m", accuracy_col),
        ("acc_vs_latency", "latency_ms", accuracy_col),
        ("macs_vs_latency", "latency_ms", "macs_m"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        _xy_panel(ax, frame, x, y, accuracy_col)
        if y == accuracy_col:
            value = frame[accuracy_col].fillna(frame.get("predicted_acc", frame[accuracy_col]))
            ok = value.notna()
            front = frame[ok][pareto_mask(frame[x][ok], value[ok])].sort_values(x)
            ax.step(front[x], value[front.index], where="post", c="k", lw=0.8, alpha=0.6, label="Pareto front")
        ax.set_xlabel({"macs_m": "MACs (M, conv+linear, fvcore)", "latency_ms": "latency, batch 1 (ms)"}[x])
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
    """Accuracy against latency of every FReLU mask, Pareto front joined and labelled."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(frame.latency_ms, frame.val_acc, c="tab:gray", s=20, label="mask")
    front = frame[frame.pareto].sort_values("latency_ms")
    ax.plot(front.latency_ms, front.val_acc, marker="o", c="tab:red", label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(row["mask"], (row.latency_ms, row.val_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency, batch 1 (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("FReLU placement: one bit per stage (1 = FReLU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_vs_macs(frame: pd.DataFrame, group: str, accuracy_col: str = "test_acc", title: str = "") -> Figure:
    """Accuracy against measured MACs, one line per group (e.g. scaling rule)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, rows in frame.groupby(group, sort=False):
        rows = rows.sort_values("macs")
        ax.plot(rows.macs / 1e6, rows[accuracy_col], marker="o", label=str(name))
    ax.set_xlabel("MACs (M, conv+linear, fvcore)")
    ax.set_ylabel(accuracy_col.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def flgc_figure(frame: pd.DataFrame) -> Figure:
    """Accuracy and deployed MACs as the number of groups grows, plain FLGC against duplication."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    dense = frame[frame.variant == "dense"]
    for duplicate, label in ((False, "FLGC"), (True, "FLGC + duplication")):
        rows = pd.concat([dense, frame[(frame.variant != "dense") & (frame.duplicate == duplicate)]]).sort_values(
            "groups"
        )
        if "test_acc" in rows:
            left.plot(rows.groups, rows.test_acc, marker="o", label=label)
        right.plot(rows.groups, rows.macs / 1e6, marker="o", label=label)
    for ax, ylabel in ((left, "test accuracy"), (right, "deployed MACs (M)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("groups G")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("accuracy as groups grow")
    right.set_title("cost of the deployed model")
    fig.tight_layout()
    return fig
