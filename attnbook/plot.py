"""The book's one plotting style (used by every chapter).

Okabe-Ito colours (colour-blind safe), labelled axes with units, log-log
scaling plots with the fitted slope in the legend, and stored reference runs
drawn dashed with hollow markers next to the reader's live run (solid, filled).
Figures are drawn on white; the site shows them on a white card in its dark
theme, so they read the same in both.

Typical use::

    attnbook.plot.use_style()
    fig, ax = attnbook.plot.subplots()
    attnbook.plot.loglog_fit(ax, ns, times, "dense", color=attnbook.plot.color("dense"))
    attnbook.plot.loglog_fit(
        ax, stored_ns, stored_times, "dense", stored=True, color=attnbook.plot.color("dense")
    )
    attnbook.plot.labels(ax, "sequence length n (tokens)", "forward time (s)")
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from attnbook.measure import fit_loglog

__all__ = [
    "FIGURE_WIDTH",
    "PALETTE",
    "MARKERS",
    "use_style",
    "loglog_fit",
    "labels",
    "subplots",
    "color",
    "marker",
    "tidy_log_axes",
    "inline_svg",
]

#: Figure width in inches: the content column at 1400 px is about 860 px, and an SVG figure is
#: shown at 96 px per inch, so text set in points is shown at (at least) its size in pixels.
FIGURE_WIDTH = 8.6

# Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion, reddish
# purple, sky blue, yellow, black. Distinguishable with every common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

_STYLE = {
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "figure.figsize": (FIGURE_WIDTH, 4.3),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "text.color": "#222222",
    "axes.labelcolor": "#222222",
    "axes.edgecolor": "#444444",
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "font.size": 10,
    "svg.hashsalt": "attnbook",  # the same figure gives the same SVG ids on every run
    # text stays text in the SVG: sharp, searchable, and measurable by the browser test (its
    # size as displayed must be at least 9 px at 1400 px, tests/test_site.py)
    "svg.fonttype": "none",
}

#: Markers cycled with the colours, so that more series than colours stay distinct (colour, marker).
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]

_COLOURS: dict[str, str] = {}
_MARKERS: dict[str, str] = {}


def use_style() -> None:
    """Apply the book's matplotlib style (white figures readable in light and dark site themes).

    In a notebook, figures are shown as SVG: sharp at any pixel density, and with no fixed pixel
    width or height attached (the "retina" PNG format attaches both, and a page that narrows the
    width to its column then squashes the figure), so a page scales them with their aspect ratio.
    """
    mpl.rcParams.update(_STYLE)
    try:  # only inside IPython/Jupyter
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("svg")
    except ImportError:
        pass


def color(name: str) -> str:
    """A stable colour for a series name (e.g. a mechanism), so it keeps its colour across
    figures."""
    if name not in _COLOURS:
        _COLOURS[name] = PALETTE[len(_COLOURS) % len(PALETTE)]
    return _COLOURS[name]


def marker(name: str) -> str:
    """A stable marker for a series name; with :func:`color`, no two of the first 80 names share
    both."""
    if name not in _MARKERS:
        _MARKERS[name] = MARKERS[(len(_MARKERS) // len(PALETTE) + len(_MARKERS)) % len(MARKERS)]
    return _MARKERS[name]


def tidy_log_axes(ax) -> None:
    """Label only the decades (and powers of two on an x axis of lengths): no colliding minor
    labels."""
    from matplotlib.ticker import LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_formatter(NullFormatter())
            axis.set_major_locator(LogLocator(base=10, numticks=12))


def subplots(ncols: int = 1, nrows: int = 1, **kwargs):
    """``plt.subplots`` sized for the book's content column: one width for every figure (panels
    share it), so no figure is scaled down and its text is shown at the size it was set in."""
    kwargs.setdefault("figsize", (FIGURE_WIDTH, (4.3 if ncols == 1 else 3.6) * nrows))
    return plt.subplots(nrows, ncols, **kwargs)


def labels(ax, x: str, y: str, title: str | None = None) -> None:
    """Label both axes (include units, e.g. 'time (s)') and optionally the title.

    Returns None, so that a cell ending with it prints no ``<Axes: ...>`` repr.
    """
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title)


def loglog_fit(
    ax,
    x,
    y,
    label: str,
    stored: bool = False,
    color=None,
    fit: bool = True,
    marker=None,
    legend: bool = True,
):
    """Plot y against x on log-log axes with a least-squares fit; slope goes in the legend.

    ``stored=True`` marks a stored reference run (dashed line, hollow markers, "[stored]" in the
    legend); live runs are solid with filled markers. Returns the
    :class:`~attnbook.measure.LogLogFit` (or None when ``fit=False``).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < (2 if fit else 1):
        raise ValueError(f"x must hold at least {2 if fit else 1} points to plot, got {x.size}")
    for name, values in (("x", x), ("y", y)):
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"{name} must be finite and positive for a log-log plot")
    result = fit_loglog(x, y) if fit else None
    text = f"{label} (slope {result.slope:.2f})" if result is not None else label
    text += " [stored]" if stored else ""
    style = dict(
        marker=marker or ("s" if stored else "o"),
        linestyle="none",
        color=color,
        markerfacecolor="none" if stored else None,
    )
    line = ax.loglog(x, y, label=text, **style)[0]
    if result is not None:
        xs = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(
            xs, result.predict(xs), "--" if stored else "-", color=line.get_color(), alpha=0.8
        )
    if legend:
        ax.legend()
    return result


def inline_svg(fig):
    """The figure as an inline SVG element in an IPython ``HTML`` object.

    For a chapter page's figure: a notebook glues it (``glue(key, inline_svg(fig),
    display=False)``) and the chapter page pastes it with myst-nb's ``{glue}`` directive and its
    ``:doc:`` option. Pasting from another page, myst-nb renders HTML but no SVG image (and no
    image whose file the other page did not write), so the figure travels as markup. No date in the
    metadata, so the same figure gives the same markup, and no RDF block.
    """
    import io
    import re

    from IPython.display import HTML

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # without the XML declaration and DOCTYPE
    # without the RDF metadata, whose text (format, creator) a search index would pick up
    return HTML(re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S))
