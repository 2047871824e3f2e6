"""Figures of text explanations (:class:`iba.text.TokenMap`, docs/mathematics.md section 6.3): the
words shaded by their bits in the terminal, in a self-contained HTML page and in a PNG.

One colour scale serves all three: :data:`RAMP`, from white (0 bits) to dark red (the scale's
maximum), read linearly in bits; a figure of several texts shares one scale, so their shades
compare. NumPy and the standard library only; :func:`plot_token_map` and :func:`save_png` import
matplotlib when called (``pip install "iba[plot]"``).

>>> print(terminal(maps[0]))                   # doctest: +SKIP
>>> Path("text.html").write_text(html(maps))   # doctest: +SKIP
>>> save_png(maps, "text.png")                 # doctest: +SKIP
"""

from __future__ import annotations

import html as _html
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iba.text import TokenMap

# White to dark red (ColorBrewer's OrRd hues), light to dark: the shade of 0 bits, ..., of the
# scale's maximum, interpolated linearly in between.
RAMP = ((255, 255, 255), (254, 232, 200), (253, 187, 132), (239, 101, 72), (179, 0, 0))
# The terminal's shades: xterm-256 colours nearest to RAMP at 8 even steps, (index, RGB).
TERMINAL_LEVELS = (
    (231, (255, 255, 255)),
    (230, (255, 255, 215)),
    (223, (255, 215, 175)),
    (222, (255, 215, 135)),
    (215, (255, 175, 95)),
    (203, (255, 95, 95)),
    (166, (215, 95, 0)),
    (124, (175, 0, 0)),
)
_RESET = "\x1b[0m"
FONT_SIZE = 12.0  # points, the PNG's words
_PAD = 0.2  # the PNG's word boxes: padding in font sizes
_LINE = 1.9  # the PNG's line height in font sizes


# -- the colour scale ----------------------------------------------------------------------------


def shade(fraction: float) -> tuple[int, int, int]:
    """The RGB (0-255) of ``fraction`` of the scale (clipped to ``[0, 1]``) on :data:`RAMP`."""
    f = float(np.clip(fraction, 0.0, 1.0)) * (len(RAMP) - 1)
    i = min(int(f), len(RAMP) - 2)
    t = f - i
    low, high = RAMP[i], RAMP[i + 1]
    return (
        round(low[0] + (high[0] - low[0]) * t),
        round(low[1] + (high[1] - low[1]) * t),
        round(low[2] + (high[2] - low[2]) * t),
    )


def luminance(rgb: Sequence[float] | np.ndarray) -> float:
    """The relative luminance (0 black, 1 white) of an sRGB colour with channels 0-255."""
    channels = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def _ink(rgb: Sequence[float] | np.ndarray) -> str:
    """Black or white: whichever reads better on ``rgb``."""
    return "#000000" if luminance(rgb) > 0.18 else "#ffffff"


def scale_max(token_maps: Sequence[TokenMap], tokens: bool = False) -> float:
    """The top of a shared scale: the most bits of any word (or token) of ``token_maps``; 1 when
    there are none or all are 0 (everything then shows the lightest shade)."""
    values = [m.token_bits if tokens else m.word_bits for m in token_maps]
    top = max((float(np.max(v)) for v in values if len(v)), default=0.0)
    return top if top > 0 and np.isfinite(top) else 1.0


def _fractions(bits: np.ndarray, vmax: float) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(bits, np.float64)) / vmax, 0.0, 1.0)


def _check_vmax(vmax: float | None) -> None:
    if vmax is not None and not (np.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be a finite number > 0 (the scale's top in bits), got {vmax}")


def _maps(token_maps: TokenMap | Sequence[TokenMap]) -> list[TokenMap]:
    maps = [token_maps] if isinstance(token_maps, TokenMap) else list(token_maps)
    bad = [type(m).__name__ for m in maps if not isinstance(m, TokenMap)]
    if bad:
        raise TypeError(f"expected iba.text.TokenMap objects (from explain()), got {bad[:3]}")
    if not maps:
        raise ValueError("no token maps given: pass the list that explain() returns")
    return maps


# -- words and labels ----------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` with control characters (escape sequences, tabs, newlines) as spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def _pieces(token_map: TokenMap) -> list[tuple[str, float | None]]:
    """The text in order as ``(characters, bits)``: each word with its bits, and the characters
    between words (and after the last word read) with ``None``."""
    pieces: list[tuple[str, float | None]] = []
    at = 0
    for word, bits in zip(token_map.words, token_map.word_bits):
        if word.start > at:
            pieces.append((token_map.text[at : word.start], None))
        pieces.append((token_map.text[word.start : word.end], float(bits)))
        at = max(at, word.end)
    if at < len(token_map.text):
        pieces.append((token_map.text[at:], None))
    return pieces


def _label(index: int, labels: Sequence[str] | None) -> str:
    if labels is not None and 0 <= index < len(labels):
        return str(labels[index])
    return f"class {index}"


def describe(token_map: TokenMap, labels: Sequence[str] | None = None) -> str:
    """One line: the prediction with the probabilities, and the class explained, e.g.
    ``fresh 99.9% (rotten 0.1%); explained: fresh``."""
    parts = []
    if token_map.probabilities is not None and token_map.prediction is not None:
        p = token_map.probabilities
        first = token_map.prediction
        others = [i for i in np.argsort(-p, kind="stable") if i != first]
        shown = ", ".join(f"{_label(int(i), labels)} {p[i]:.1%}" for i in others[:4])
        more = f", ... {len(others) - 4} more" if len(others) > 4 else ""
        parts.append(
            f"{_label(first, labels)} {p[first]:.1%}" + (f" ({shown}{more})" if shown else "")
        )
    if token_map.target is not None:
        parts.append(f"explained: {_label(token_map.target, labels)}")
    else:
        parts.append("explained: the loss given")
    return "; ".join(parts)


def _fmt(bits: float) -> str:
    return f"{bits:.1f}"


# -- the terminal --------------------------------------------------------------------------------


def use_color(color: bool | None = None, stream: Any = None) -> bool:
    """Whether to colour: ``color`` if given, else when ``stream`` (default: stdout) is a
    terminal and the ``NO_COLOR`` environment variable is unset or empty (no-color.org)."""
    if color is not None:
        return bool(color)
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def terminal_level(fraction: float) -> int:
    """The index into :data:`TERMINAL_LEVELS` of ``fraction`` of the scale (8 even bins)."""
    n = len(TERMINAL_LEVELS)
    return min(int(float(np.clip(fraction, 0.0, 1.0)) * n), n - 1)


def _paint(text: str, fraction: float) -> str:
    index, rgb = TERMINAL_LEVELS[terminal_level(fraction)]
    ink = "38;5;16" if _ink(rgb) == "#000000" else "38;5;231"
    return f"\x1b[48;5;{index}m\x1b[{ink}m{text}{_RESET}"


def terminal(
    token_map: TokenMap,
    color: bool | None = None,
    *,
    tokens: bool = False,
    vmax: float | None = None,
) -> str:
    """The text with its words (or tokens) shaded by bits, and a legend line with the scale.

    Args:
        token_map: one text's explanation.
        color: ANSI background colours (xterm-256); ``False``: plain text with each word's bits
            in brackets (``wonderful[3.3]``); default: colour when stdout is a terminal and
            ``NO_COLOR`` is unset (:func:`use_color`).
        tokens: show the tokens (wordpieces, ``[CLS]`` and ``[SEP]`` included) instead of the
            words.
        vmax: the bits of the darkest shade (default: the map's most).
    """
    if not isinstance(token_map, TokenMap):
        raise TypeError(
            f"terminal() shows one iba.text.TokenMap (one of explain()'s list), got "
            f"{type(token_map).__name__}"
        )
    _check_vmax(vmax)
    colored = use_color(color)
    top = scale_max([token_map], tokens) if vmax is None else float(vmax)
    if tokens:
        pieces: list[tuple[str, float | None]] = []
        for i, (token, bits) in enumerate(zip(token_map.tokens, token_map.token_bits)):
            if i:
                pieces.append((" ", None))
            pieces.append((token, float(bits)))
    else:
        pieces = _pieces(token_map)
    unit = "token" if tokens else "word"
    out = []
    for text, bits in pieces:
        text = _printable(text)
        if bits is None:
            out.append(text)
        elif colored:
            out.append(_paint(text, float(_fractions(np.array(bits), top))))
        else:
            out.append(f"{text}[{_fmt(bits)}]")
    body = "".join(out).strip() if any(b is not None for _, b in pieces) else f"(no {unit}s)"
    if colored:
        cells = "".join(f"\x1b[48;5;{index}m  {_RESET}" for index, _ in TERMINAL_LEVELS)
        legend = f"scale: 0 {cells} {_fmt(top)} bits per {unit}"
    else:
        legend = f"(bits per {unit} in brackets; total {_fmt(token_map.total_bits)} bits)"
    return f"{body}\n{legend}"


# -- HTML ----------------------------------------------------------------------------------------

_STYLE = """\
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 52em; color: #222; }
h1 { font-size: 1.3em; }
section { margin: 1.2em 0; padding: 0.8em 1em; border: 1px solid #ddd; border-radius: 6px; }
.meta { color: #555; font-size: 0.9em; margin: 0 0 0.5em 0; }
.text { font-size: 1.25em; line-height: 2.1; margin: 0; }
.w { padding: 0.15em 0.1em; border-radius: 3px; }
.cut { color: #999; }
.legend { display: flex; align-items: center; gap: 0.6em; font-size: 0.9em; color: #555; }
.bar { width: 16em; height: 1em; border: 1px solid #ccc; }
"""


def _rgb(rgb: Sequence[int]) -> str:
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def html(
    token_maps: TokenMap | Sequence[TokenMap],
    title: str | None = None,
    *,
    labels: Sequence[str] | None = None,
    vmax: float | None = None,
) -> str:
    """A self-contained HTML page (no scripts, no external files): each text with its words
    shaded by bits on one shared scale, a tooltip per word with its bits, the prediction with
    the probabilities and the class explained.

    Args:
        token_maps: one or several texts' explanations.
        title: the page's heading (default: "Information per word").
        labels: the class names (index order), e.g. ``("rotten", "fresh")``.
        vmax: the bits of the darkest shade (default: the most of any word).
    """
    maps = _maps(token_maps)
    _check_vmax(vmax)
    top = scale_max(maps) if vmax is None else float(vmax)
    esc = _html.escape
    heading = esc(title if title is not None else "Information per word")
    gradient = ", ".join(_rgb(c) for c in RAMP)
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{heading}</title>",
        f"<style>\n{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{heading}</h1>",
        '<p class="legend">0 bits '
        f'<span class="bar" style="background: linear-gradient(to right, {gradient})"></span>'
        f" {esc(_fmt(top))} bits per word (information the model used; hover a word)</p>",
    ]
    for m in maps:
        meta = esc(describe(m, labels)) + esc(f"; total {_fmt(m.total_bits)} bits")
        if m.truncated:
            meta += " (truncated: the grey end was cut at the model's maximum length)"
        spans = []
        pieces = _pieces(m)
        for k, (text, bits) in enumerate(pieces):
            if bits is None:
                cut = m.truncated and k == len(pieces) - 1 and k > 0
                spans.append(f'<span class="cut">{esc(text)}</span>' if cut else esc(text))
                continue
            rgb = shade(float(_fractions(np.array(bits), top)))
            tip = esc(f"{text}: {bits:.2f} bits", quote=True)
            spans.append(
                f'<span class="w" style="background: {_rgb(rgb)}; color: {_ink(rgb)}" '
                f'title="{tip}">{esc(text)}</span>'
            )
        body = "".join(spans) if m.words else "<em>(no words)</em>"
        lines += ["<section>", f'<p class="meta">{meta}</p>', f'<p class="text">{body}</p>']
        lines.append("</section>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


# -- matplotlib ----------------------------------------------------------------------------------


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            'the PNG figures need matplotlib: pip install "iba[plot]" (or pip install matplotlib)'
        ) from None
    return matplotlib


def colormap() -> Any:
    """:data:`RAMP` as a matplotlib colormap (``iba-bits``)."""
    from matplotlib.colors import LinearSegmentedColormap

    _matplotlib()
    return LinearSegmentedColormap.from_list("iba-bits", [np.array(c) / 255 for c in RAMP])


class _Placed:
    """A word of the PNG's layout: its characters, bits, and offset in points from top left."""

    def __init__(self, text: str, bits: float, x: float, y: float):
        self.text, self.bits, self.x, self.y = text, bits, x, y


def _measurer(fig: Any, size: float) -> Any:
    """``text -> width in points`` at ``size``: measured by ``fig``'s renderer where its canvas
    has one (Agg and the interactive canvases built on it: hinting included), else from the
    font's outlines."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size)
    get_renderer = getattr(fig.canvas, "get_renderer", None)
    renderer = get_renderer() if callable(get_renderer) else None
    if renderer is not None:
        scale = 72.0 / fig.dpi
        return lambda text: renderer.get_text_width_height_descent(text, prop, False)[0] * scale
    return lambda text: text_to_path.get_text_width_height_descent(text, prop, False)[0]


def _layout(
    maps: list[TokenMap], headers: list[str], width: float, measure: Any
) -> tuple[list[tuple[float, str]], list[_Placed], float]:
    """Wrap every map's words into lines ``width`` points wide, each map under its header: the
    headers placed ``(y, text)``, the words placed, and the height used, all in points from the
    top left (``measure``: :func:`_measurer`'s at :data:`FONT_SIZE`)."""
    pad = _PAD * FONT_SIZE
    space = measure("a a") - measure("aa")
    line = _LINE * FONT_SIZE
    tops: list[tuple[float, str]] = []
    placed: list[_Placed] = []
    y = 0.0
    for index, (m, header) in enumerate(zip(maps, headers)):
        if index:
            y += 0.6 * line
        y += 0.9 * line
        tops.append((y, _printable(header)))
        y += line
        x = pad
        for text, bits in _pieces(m):
            if bits is None:
                if text.strip() == "" and x > pad:
                    x += space
                continue
            text = _printable(text)
            w = measure(text)
            if x + w + pad > width and x > pad:
                x, y = pad, y + line
            placed.append(_Placed(text, bits, x, y))
            x += w + 2 * pad
        if not m.words:
            placed.append(_Placed("(no words)", float("nan"), pad, y))
    return tops, placed, y + 0.6 * line


def _draw(ax: Any, maps: list[TokenMap], labels: Sequence[str] | None, vmax: float) -> Any:
    """The words of ``maps`` on ``ax`` (axis off), wrapped to its width; returns the mappable of
    the colour scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = ax.figure
    width = ax.get_position().width * fig.get_figwidth() * 72.0
    headers = [describe(m, labels) for m in maps]
    tops, placed, _ = _layout(maps, headers, width, _measurer(fig, FONT_SIZE))
    cmap = colormap()
    common = {
        "xy": (0, 1),
        "xycoords": "axes fraction",
        "textcoords": "offset points",
        "ha": "left",
        "va": "baseline",
        "annotation_clip": False,
        "parse_math": False,
    }
    for y, text in tops:
        ax.annotate(text, xytext=(0, -y), fontsize=0.85 * FONT_SIZE, color="#555555", **common)
    for word in placed:
        if np.isnan(word.bits):
            ax.annotate(word.text, xytext=(word.x, -word.y), fontsize=FONT_SIZE, **common)
            continue
        rgba = cmap(float(_fractions(np.array(word.bits), vmax)))
        ax.annotate(
            word.text,
            xytext=(word.x, -word.y),
            fontsize=FONT_SIZE,
            color=_ink(np.array(rgba[:3]) * 255),
            bbox={"boxstyle": f"square,pad={_PAD}", "facecolor": rgba, "edgecolor": "none"},
            **common,
        )
    ax.set_axis_off()
    return ScalarMappable(norm=Normalize(0.0, vmax), cmap=cmap)


def _figure(
    maps: list[TokenMap], labels: Sequence[str] | None, vmax: float, width: float, dpi: float
) -> Any:
    """A new figure (Agg, no pyplot state) sized to hold the wrapped words and a colour bar."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    margin = 0.3  # inches, left and right
    fig = Figure(figsize=(width, 2.0), dpi=dpi)
    FigureCanvasAgg(fig)
    headers = [describe(m, labels) for m in maps]
    _, _, used = _layout(maps, headers, (width - 2 * margin) * 72.0, _measurer(fig, FONT_SIZE))
    bar = 0.85  # inches for the colour bar and its label
    height = used / 72.0 + bar + 0.1
    fig.set_size_inches(width, height)
    ax = fig.add_axes(
        (margin / width, bar / height, 1 - 2 * margin / width, 1 - (bar + 0.1) / height)
    )
    mappable = _draw(ax, maps, labels, vmax)
    cax = fig.add_axes((margin / width, 0.42 / height, 0.45, 0.14 / height))
    fig.colorbar(mappable, cax=cax, orientation="horizontal", label="bits per word")
    return fig


def plot_token_map(
    token_map: TokenMap,
    ax: Any = None,
    *,
    labels: Sequence[str] | None = None,
    vmax: float | None = None,
) -> Any:
    """Draw one text's words in wrapped lines, each in a box shaded by its bits, with the
    prediction above and a colour bar in bits; returns the axes.

    Args:
        token_map: one text's explanation.
        ax: the matplotlib axes to draw on (its width sets the wrapping; a colour bar is added
            below it); default: a new figure sized to the text (``ax.figure``).
        labels: the class names (index order).
        vmax: the bits of the darkest shade (default: the map's most).
    """
    if not isinstance(token_map, TokenMap):
        raise TypeError(
            f"plot_token_map() draws one iba.text.TokenMap (save_png() takes several), got "
            f"{type(token_map).__name__}"
        )
    maps = [token_map]
    _check_vmax(vmax)
    top = scale_max(maps) if vmax is None else float(vmax)
    if ax is None:
        fig = _figure(maps, labels, top, width=8.0, dpi=100)
        return fig.axes[0]
    _matplotlib()
    mappable = _draw(ax, maps, labels, top)
    ax.figure.colorbar(
        mappable, ax=ax, orientation="horizontal", fraction=0.08, pad=0.02, label="bits per word"
    )
    return ax


def save_png(
    token_maps: TokenMap | Sequence[TokenMap],
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    vmax: float | None = None,
    width: float = 8.0,
    dpi: float = 120,
) -> Path:
    """Write a PNG of one or several texts (one scale in bits for all, a colour bar below);
    returns its path.

    Args:
        token_maps: the explanations.
        path: the file to write.
        labels: the class names (index order).
        vmax: the bits of the darkest shade (default: the most of any word).
        width: the figure's width in inches (the words wrap to it; the height follows).
        dpi: pixels per inch.
    """
    maps = _maps(token_maps)
    _check_vmax(vmax)
    if not (np.isfinite(width) and width > 1):
        raise ValueError(f"width must be more than 1 inch, got {width}")
    top = scale_max(maps) if vmax is None else float(vmax)
    fig = _figure(maps, labels, top, width=float(width), dpi=dpi)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
