"""The book's one plotting style (used by every chapter).

Okabe-Ito colours (colour-blind safe), labelled axes with units, log-log
scaling plots with the fitted slope in the legend, and stored reference runs
drawn dashed with hollow markers next to the reader's live run (solid, filled).
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from .measure import fit_loglog

__all__ = ["PALETTE", "use_style", "loglog_fit", "labels", "subplots"]

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def use_style() -> None:
    """Apply the book's matplotlib style (white figures readable in light and dark site themes)."""
    mpl.rcParams.update({
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "figure.facecolor": "white",
        "axes.facecolor": "white",
        "savefig.facecolor": "white",
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "font.size": 10,
    })


def subplots(ncols: int = 1, nrows: int = 1, **kwargs):
    """``plt.subplots`` sized for the book's page width."""
    width = min(6.4 * ncols, 12.8)
    kwargs.setdefault("figsize", (width, 4.0 * nrows))
    return plt.subplots(nrows, ncols, **kwargs)


def labels(ax, x: str, y: str, title: str | None = None):
    """Label both axes (include units, e.g. 'time (s)') and optionally the title."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title)
    return ax


def loglog_fit(ax, x, y, label: str, stored: bool = False, color=None, fit: bool = True):
    """Plot y against x on log-log axes with a least-squares fit; slope goes in the legend.

    ``stored=True`` marks a stored reference run (dashed line, hollow markers);
    live runs are solid with filled markers. Returns the :class:`~attnbook.measure.LogLogFit`
    (or None when ``fit=False``).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    result = fit_loglog(x, y) if fit else None
    text = f"{label} (slope {result.slope:.2f})" if result is not None else label
    text += " [stored]" if stored else ""
    line = ax.loglog(x, y, "o", mfc="none" if stored else None, color=color, label=text)[0]
    if result is not None:
        xs = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(xs, result.predict(xs), "--" if stored else "-", color=line.get_color(), alpha=0.8)
    ax.legend()
    return result
