"""attnbook.plot: the book's plotting style."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from attnbook import plot


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_palette_is_okabe_ito_and_used_by_the_style():
    plot.use_style()
    assert len(set(plot.PALETTE)) == 8
    cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    assert cycle == plot.PALETTE
    assert matplotlib.rcParams["figure.facecolor"] == "white"


def test_loglog_fit_recovers_the_slope_and_marks_stored_runs():
    plot.use_style()
    fig, ax = plot.subplots()
    n = np.array([256, 512, 1024, 2048, 4096])
    live = plot.loglog_fit(ax, n, 3e-9 * n**2.0, "dense")
    stored = plot.loglog_fit(
        ax, n, 5e-7 * n**1.0, "linear", stored=True, color=plot.color("linear")
    )
    assert live.slope == pytest.approx(2.0, abs=1e-9) and stored.slope == pytest.approx(
        1.0, abs=1e-9
    )
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["dense (slope 2.00)", "linear (slope 1.00) [stored]"]
    points = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
    fits = [line for line in ax.get_lines() if line.get_linestyle() != "None"]
    assert points[0].get_markerfacecolor() != "none" and points[1].get_markerfacecolor() == "none"
    assert [f.get_linestyle() for f in fits] == ["-", "--"]
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_colour_of_a_series_is_stable():
    assert plot.color("performer") == plot.color("performer")
    assert plot.color("performer") != plot.color("linformer")


@pytest.mark.parametrize(
    "x, y, match",
    [
        ([1, 2, 3], [1, 2], "same length"),
        ([1], [1], "at least 2"),
        ([1, 2, 0], [1, 2, 3], "x must be finite and positive"),
        ([1, 2, 3], [1, np.nan, 3], "y must be finite and positive"),
    ],
)
def test_loglog_fit_rejects_bad_input(x, y, match):
    fig, ax = plot.subplots()
    with pytest.raises(ValueError, match=match):
        plot.loglog_fit(ax, x, y, "bad")


def test_labels_sets_axes_and_title():
    ax = plot.subplots()[1]
    assert (
        plot.labels(ax, "sequence length n (tokens)", "time (s)", "title") is None
    )  # no repr in a notebook
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "sequence length n (tokens)",
        "time (s)",
        "title",
    )


def test_notebook_figures_carry_no_fixed_pixel_size():
    """In IPython a figure is SVG with no width/height metadata: the page keeps its aspect ratio."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        plot.use_style()
        fig, ax = plot.subplots(ncols=2, figsize=(8, 3))
        ax[0].plot([1, 2, 3])
        data, metadata = shell.display_formatter.format(fig)
        assert "image/svg+xml" in data and "image/png" not in data
        assert not any(
            k in (metadata.get(mime) or {}) for mime in data for k in ("width", "height")
        )
        width, height = (
            float(v)
            for v in re.search(
                r'<svg[^>]*width="([\d.]+)pt"[^>]*height="([\d.]+)pt"', data["image/svg+xml"]
            ).groups()
        )
        assert width / height == pytest.approx(8 / 3, rel=0.15)  # bbox "tight" trims a little
    finally:
        InteractiveShell.clear_instance()


def test_figures_share_the_column_width_and_keep_text_as_text():
    """One width for every figure, panels included; SVG text stays <text> (measured by the
    browser test); a chapter page's figure pastes as inline SVG without date or RDF metadata."""
    plot.use_style()
    for ncols in (1, 2, 3):
        fig, _ = plot.subplots(ncols=ncols)
        assert fig.get_figwidth() == plot.FIGURE_WIDTH
    fig, ax = plot.subplots()
    ax.plot([1, 2], label="a")
    ax.legend()
    svg = plot.inline_svg(fig).data
    assert svg.startswith("<svg") and re.search(r'viewBox="0 0 [\d.]+ [\d.]+"', svg)
    assert "<text" in svg and re.search(r"font-size: \d+(\.\d+)?px", svg)
    assert "<metadata>" not in svg and "<dc:date>" not in svg
    assert plot.inline_svg(fig).data == svg  # the same figure, the same markup
