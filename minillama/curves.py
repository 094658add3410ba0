"""Training curves as a picture: the loss of every step and the dev score of every epoch.

`plot_curves(history, path)` writes a PNG (matplotlib, no display needed) with two
panels: training loss per optimisation step (epoch boundaries dotted), and the dev
metric per epoch with the best epoch marked, the one whose weights the run kept.
"""
from __future__ import annotations

import os
from typing import List

from .files import atomic_write


def kept_epoch(metric: List[float], lower_is_better: bool, min_delta: float = 0.0) -> int:
    """The index of the epoch whose weights train.fit keeps: the first, then each one that
    beats the kept one by more than min_delta (ties keep the earlier)."""
    best = 0
    for i, m in enumerate(metric):
        if (metric[best] - m if lower_is_better else m - metric[best]) > min_delta:
            best = i
    return best


def plot_curves(history: List, path: str, title: str = "", min_delta: float = 0.0):
    """history: train.EpochResult per epoch (step_losses, dev_acc or dev_loss); min_delta:
    the run's --min_delta, so the marked epoch is the one fit kept."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    if not history:
        return
    by_loss = history[0].dev_acc is None
    metric = [r.dev_loss if by_loss else r.dev_acc for r in history]
    best = kept_epoch(metric, by_loss, min_delta)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, x = [], 0
    for r in history:
        steps += [(x + i + 1, loss) for i, loss in enumerate(r.step_losses)]
        x += len(r.step_losses)
        left.axvline(x, color="0.85", linestyle=":", linewidth=1)
    left.plot([s for s, _ in steps], [v for _, v in steps], linewidth=1)
    left.set(xlabel="optimisation step", ylabel="training loss", title="training loss per step")
    epochs = [r.epoch for r in history]
    right.plot(epochs, metric, marker="o")
    right.scatter([epochs[best]], [metric[best]], s=140, facecolors="none", edgecolors="red", zorder=3,
                  label=f"best: epoch {epochs[best]} ({metric[best]:.3f})")
    right.set(xlabel="epoch", ylabel="dev loss" if by_loss else "dev accuracy",
              title=("dev loss" if by_loss else "dev accuracy") + " per epoch")
    right.set_xticks(epochs)
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def curves_path(output: str) -> str:
    """<output without its extension>-curves.png, beside the run's main output."""
    return f"{os.path.splitext(output)[0]}-curves.png"
