"""The figures of text explanations (``iba.textplot``) on token maps built with
``iba.text.token_map``: terminal colours and plain text, NO_COLOR, the HTML page (escaping,
shading, tooltips) and the PNG (written, readable, shaded by bits)."""

from __future__ import annotations

import html.parser
import io
import re

import numpy as np
import pytest

from iba import text, textplot

LABELS = ("rotten", "fresh")


def _map(sentence, word_bits, target=1, logits=(0.2, 2.5), split=(), truncated=False):
    """A TokenMap of ``sentence`` tokenised into words and punctuation, ``[CLS]`` 0.5 bits and
    ``[SEP]`` 0.3 bits around them; a word in ``split`` becomes two wordpieces whose bits
    (half each) sum to its bits."""
    tokens, word_ids, offsets, bits = ["[CLS]"], [None], [(0, 0)], [0.5]
    for k, (match, b) in enumerate(zip(re.finditer(r"\w+|[^\w\s]", sentence), word_bits)):
        start, end = match.span()
        if match.group() in split:
            middle = (start + end) // 2
            tokens += [sentence[start:middle], "##" + sentence[middle:end]]
            word_ids += [k, k]
            offsets += [(start, middle), (middle, end)]
            bits += [b / 2, b / 2]
        else:
            tokens.append(match.group())
            word_ids.append(k)
            offsets.append((start, end))
            bits.append(b)
    tokens.append("[SEP]")
    word_ids.append(None)
    offsets.append((0, 0))
    bits.append(0.3)
    special = [w is None for w in word_ids]
    return text.token_map(
        sentence, tokens, word_ids, offsets, bits, special, target=target, logits=logits,
        truncated=truncated,
    )  # fmt: skip


FRESH = _map(
    "Strangely wonderful and weirdly touching.", [1.5, 3.3, 1.3, 2.6, 2.3, 1.9], split={"weirdly"}
)
ROTTEN = _map(
    'A dull <film> & "nothing" more.', [0.0, 4.0, 0.5, 1.0, 2.0, 0.5, 3.0, 1.5, 0.5, 1.0, 0.2],
    target=0, logits=(3.0, 0.0),
)  # fmt: skip
SGR = re.compile(r"\x1b\[48;5;(\d+)m\x1b\[38;5;\d+m(.*?)\x1b\[0m")


# -- the scale -----------------------------------------------------------------------------------


def test_the_shades_darken_with_the_bits():
    fractions = np.linspace(0, 1, 41)
    lum = [textplot.luminance(textplot.shade(f)) for f in fractions]
    assert np.all(np.diff(lum) < 0), lum
    assert textplot.shade(0) == (255, 255, 255) and textplot.shade(1) == textplot.RAMP[-1]
    assert textplot.shade(-3) == textplot.shade(0) and textplot.shade(7) == textplot.shade(1)
    terminal = [textplot.luminance(rgb) for _, rgb in textplot.TERMINAL_LEVELS]
    assert np.all(np.diff(terminal) < 0), terminal
    levels = [textplot.terminal_level(f) for f in fractions]
    assert levels[0] == 0 and levels[-1] == len(textplot.TERMINAL_LEVELS) - 1
    assert np.all(np.diff(levels) >= 0)
    cmap = textplot.colormap()  # the PNG's colours are the same ramp
    for f in (0.0, 0.3, 0.62, 1.0):
        np.testing.assert_allclose(np.array(cmap(f)[:3]) * 255, textplot.shade(f), atol=1.5)


def test_describe_gives_the_prediction_and_the_class_explained():
    assert textplot.describe(FRESH, LABELS) == "fresh 90.9% (rotten 9.1%); explained: fresh"
    assert textplot.describe(ROTTEN) == "class 0 95.3% (class 1 4.7%); explained: class 0"
    loss = text.token_map("x", ["x"], [0], [(0, 1)], [1.0], [False])
    assert textplot.describe(loss) == "explained: the loss given"


# -- the terminal --------------------------------------------------------------------------------


def test_plain_text_gives_each_words_bits_in_brackets():
    out = textplot.terminal(FRESH, color=False)
    assert out.splitlines() == [
        "Strangely[1.5] wonderful[3.3] and[1.3] weirdly[2.6] touching[2.3].[1.9]",
        "(bits per word in brackets; total 13.7 bits)",  # words 12.9, [CLS] and [SEP] 0.8
    ]
    assert "\x1b" not in out
    tokens = textplot.terminal(FRESH, color=False, tokens=True).splitlines()[0]
    assert tokens.startswith("[CLS][0.5] Strangely[1.5]") and tokens.endswith(".[1.9] [SEP][0.3]")
    assert "wei[1.3] ##rdly[1.3]" in tokens  # wordpieces


def test_colours_follow_the_bits_on_the_terminal():
    out = textplot.terminal(ROTTEN, color=True)
    body, legend = out.splitlines()
    painted = SGR.findall(body)
    assert [word for _, word in painted] == [w.text for w in ROTTEN.words]
    order = {index: i for i, (index, _) in enumerate(textplot.TERMINAL_LEVELS)}
    levels = np.array([order[int(index)] for index, _ in painted])
    bits = ROTTEN.word_bits
    ranked = levels[np.argsort(bits, kind="stable")]
    assert np.all(np.diff(ranked) >= 0), (bits, levels)  # monotone in bits
    assert levels[np.argmax(bits)] == len(order) - 1 and levels[np.argmin(bits)] == 0
    assert legend.startswith("scale: 0 ") and legend.endswith(" 4.0 bits per word")
    assert legend.count("\x1b[48;5;") == len(textplot.TERMINAL_LEVELS)
    # a shared scale: the same word is lighter against a larger maximum
    lighter = SGR.findall(textplot.terminal(ROTTEN, color=True, vmax=8.0))
    assert order[int(lighter[1][0])] < levels[1]


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize(
    ("tty", "no_color", "color", "expected"),
    [
        (True, None, None, True),
        (True, "1", None, False),  # NO_COLOR respected
        (True, "", None, True),  # set but empty: no-color.org says colour
        (False, None, None, False),  # a pipe or a file
        (False, "1", True, True),  # asked for explicitly
        (True, None, False, False),
    ],
)
def test_colour_by_default_only_on_a_terminal_without_no_color(
    tty, no_color, color, expected, monkeypatch
):
    monkeypatch.setattr("sys.stdout", _Stream(tty))
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    assert textplot.use_color(color) is expected
    assert ("\x1b[" in textplot.terminal(FRESH, color=color)) is expected


def test_control_characters_of_the_text_are_not_printed():
    sneaky = _map("good\x1b[2Jfilm", [1.0, 2.0, 3.0, 1.0])
    for color in (True, False):
        out = textplot.terminal(sneaky, color=color)
        assert "\x1b[2J" not in out and "\x1b[2" not in out.replace("\x1b[48;5;2", "")


def test_a_text_without_words():
    empty = text.token_map("", ["[CLS]", "[SEP]"], [None, None], [(0, 0)] * 2, [1.0, 2.0],
                           [True, True], target=1, logits=(0.0, 1.0))  # fmt: skip
    assert textplot.terminal(empty, color=False).splitlines()[0] == "(no words)"
    assert "<em>(no words)</em>" in textplot.html(empty)


# -- HTML ----------------------------------------------------------------------------------------


class _Page(html.parser.HTMLParser):
    """The word spans of a page ``(text, background, tooltip)``, its visible text, and whether
    every tag closed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self.text, self.stack, self.current = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("meta",):
            self.stack.append(tag)
        if tag == "span" and attrs.get("class") == "w":
            background = re.search(r"background: rgb\((\d+), (\d+), (\d+)\)", attrs["style"])
            self.current = [[], tuple(int(v) for v in background.groups()), attrs["title"]]

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag
        if tag == "span" and self.current is not None:
            self.spans.append(("".join(self.current[0]), *self.current[1:]))
            self.current = None

    def handle_data(self, data):
        self.text.append(data)
        if self.current is not None:
            self.current[0].append(data)


def _page(maps, **kw):
    page = textplot.html(maps, labels=LABELS, **kw)
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.stack == []  # every tag closed
    return page, parsed


def test_html_escapes_the_text_and_shades_words_by_bits():
    page, parsed = _page([FRESH, ROTTEN], title="<b>Reviews</b> & more")
    assert "<b>Reviews</b>" not in page and "&lt;b&gt;Reviews&lt;/b&gt; &amp; more" in page
    assert "<film" not in page and 'title="&lt;: 0.50 bits">&lt;</span>' in page
    assert ">&amp;</span>" in page and 'title="&quot;: 3.00 bits">&quot;</span>' in page
    words = [w.text for w in FRESH.words] + [w.text for w in ROTTEN.words]
    assert [s[0] for s in parsed.spans] == words  # what a reader sees, unescaped
    assert parsed.spans[-3][2] == '": 0.50 bits'  # the tooltip of the quote mark, unescaped
    assert parsed.spans[1][2] == "wonderful: 3.30 bits"
    bits = np.concatenate([FRESH.word_bits, ROTTEN.word_bits])
    lum = np.array([textplot.luminance(s[1]) for s in parsed.spans])
    ranked = lum[np.argsort(bits, kind="stable")]
    assert np.all(np.diff(ranked) <= 1e-12), (bits, lum)  # darker with more bits
    # one scale for the page: the most bits of any word is the darkest shade, 0 bits white
    assert parsed.spans[int(np.argmax(bits))][1] == textplot.RAMP[-1]
    assert parsed.spans[len(FRESH.words)][1] == (255, 255, 255)  # "A": 0 bits
    seen = "".join(parsed.text)
    assert FRESH.text in seen and ROTTEN.text in seen  # what a reader sees is the text as given
    assert "fresh 90.9% (rotten 9.1%); explained: fresh; total 13.7 bits" in seen
    assert "rotten 95.3% (fresh 4.7%); explained: rotten" in seen
    assert "4.0 bits per word" in seen


def test_html_is_self_contained():
    page, _ = _page(FRESH)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<script" not in page and "http" not in page and "src=" not in page
    assert "<title>Information per word</title>" in page


def test_html_marks_the_cut_end_of_a_truncated_text():
    cut = _map("Great acting but the rest", [2.0, 1.0], truncated=True)
    page, parsed = _page(cut)
    assert [s[0] for s in parsed.spans] == ["Great", "acting"]
    assert '<span class="cut"> but the rest</span>' in page and "truncated" in page


# -- PNG -----------------------------------------------------------------------------------------


def test_save_png_writes_a_readable_figure_that_grows_with_the_text(tmp_path):
    import matplotlib.image

    short = textplot.save_png(FRESH, tmp_path / "short.png", labels=LABELS)
    long_map = _map(" ".join(["remarkably"] * 40), np.linspace(0, 4, 40))
    longer = textplot.save_png([FRESH, long_map], tmp_path / "long.png", dpi=80)
    assert short == tmp_path / "short.png"
    assert short.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small, big = matplotlib.image.imread(short), matplotlib.image.imread(longer)
    assert small.shape[1] == 8 * 120 and big.shape[1] == 8 * 80  # width inches x dpi
    assert big.shape[0] / 80 > small.shape[0] / 120 + 1.0  # 40 words wrap to more lines
    # the darkest shade is there (the word with the most bits and the colour bar's end)
    dark = np.array(textplot.RAMP[-1]) / 255
    assert (np.abs(small[..., :3] - dark).max(-1) < 0.02).sum() > 100


def test_plot_token_map_shades_each_word_box_by_its_bits():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    dollars = _map("cost $5 and $10 well spent", [0.5, 0.0, 2.0, 1.0, 0.0, 3.0, 1.5, 2.5])
    fig, ax = plt.subplots(figsize=(5, 3))
    try:
        assert textplot.plot_token_map(dollars, ax=ax, labels=LABELS) is ax
        boxes = [(t.get_text(), t.get_bbox_patch()) for t in ax.texts if t.get_bbox_patch()]
        assert [word for word, _ in boxes] == [w.text for w in dollars.words]  # "$" kept
        lum = np.array(
            [textplot.luminance(np.array(b.get_facecolor()[:3]) * 255) for _, b in boxes]
        )
        ranked = lum[np.argsort(dollars.word_bits, kind="stable")]
        assert np.all(np.diff(ranked) <= 1e-9)
        fig.canvas.draw()  # renders (no mathtext error on "$")
        headers = [t.get_text() for t in ax.texts if not t.get_bbox_patch()]
        assert headers == ["fresh 90.9% (rotten 9.1%); explained: fresh"]
    finally:
        plt.close(fig)
    own = textplot.plot_token_map(FRESH)  # a new figure sized to the text
    assert own.figure.get_figwidth() == 8.0 and len(own.figure.axes) == 2  # words, colour bar


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="iba.text.TokenMap"):
        textplot.html(["not a map"])
    with pytest.raises(ValueError, match="no token maps"):
        textplot.html([])
    with pytest.raises(ValueError, match="vmax must be a finite number > 0"):
        textplot.terminal(FRESH, vmax=0)
    with pytest.raises(ValueError, match="width must be more than 1 inch"):
        textplot.save_png(FRESH, "never.png", width=0.5)
