"""The README's Python examples, run as written by the session of their framework
(``tests/torch/test_readme.py``, ``tests/keras/...``, ``tests/flax/...``).

A ```` ```python ```` block runs when the line before it tags it ``<!-- readme-test: SESSION
CHAIN -->``: SESSION is the framework whose session runs it (``torch``, ``keras``, ``flax``;
``numpy`` blocks run in the torch session), and the blocks of one CHAIN run in README order in one
namespace (a later block continues an example). Sample counts and step counts are made small
(:data:`SMALL`) so that an example takes seconds; everything else runs exactly as printed, in a
temporary folder (the examples write figures and files). Imported as ``tests.readme_blocks``.

Every function reads the README unless given another markdown file (``path=``): the pages of
docs/ are read the same way (``tests/interop/test_docs.py`` runs docs/interop.md's blocks).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import NamedTuple

README = Path(__file__).resolve().parents[1] / "README.md"
TAG = re.compile(r"<!-- readme-test: (?P<session>[\w-]+) (?P<chain>[\w-]+) -->")
# (pattern, replacement): the sizes a test runs the examples with
SMALL = (
    (re.compile(r"\bn_samples=\d+"), "n_samples=16"),
    (re.compile(r"\bn=\d+"), "n=16"),
    (re.compile(r"\bsteps=\d+"), "steps=3"),
    (re.compile(r"\bn_points=\d+"), "n_points=5"),
)


class Block(NamedTuple):
    """One Python block of a page: its first code line, its tag (or ``None``), its code."""

    line: int
    session: str | None
    chain: str | None
    code: str


def blocks(text: str | None = None, path: Path = README) -> list[Block]:
    """Every ```` ```python ```` block of the page ``path`` (or of ``text``), in order."""
    lines = (path.read_text() if text is None else text).splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        tag = TAG.fullmatch(lines[i - 1].strip()) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        session, chain = (tag["session"], tag["chain"]) if tag else (None, None)
        found.append(Block(i + 2, session, chain, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return found


def chains(*sessions: str, path: Path = README) -> dict[str, list[Block]]:
    """``{"SESSION-CHAIN": blocks}`` of the blocks of ``path`` tagged for ``sessions``, in
    order."""
    grouped: dict[str, list[Block]] = {}
    for block in blocks(path=path):
        if block.session in sessions:
            grouped.setdefault(f"{block.session}-{block.chain}", []).append(block)
    return grouped


def small(code: str) -> str:
    """``code`` with the sizes of :data:`SMALL`."""
    for pattern, replacement in SMALL:
        code = pattern.sub(replacement, code)
    return code


def run(chain: list[Block], folder: Path, monkeypatch, path: Path = README) -> dict:
    """Run the blocks of one chain of the page ``path`` in ``folder``, in one namespace; returns
    the namespace.

    A failure's traceback names the page's line (the code is compiled at its line numbers)."""
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "readme"}
    with warnings.catch_warnings():
        # the small sample counts of the test, not the README's
        warnings.filterwarnings("ignore", message="the estimator has seen only")
        for block in chain:
            code = "\n" * (block.line - 1) + small(block.code)
            exec(compile(code, str(path), "exec"), namespace)
    return namespace
