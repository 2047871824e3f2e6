"""MkDocs hooks (``hooks:`` in mkdocs.yml): the method pages' figures, computed by the build.

- ``on_pre_build``: :func:`figures.build` computes the figures that are not cached (with the
  bundled models on PyTorch; see ``figures.py``), before MkDocs collects the files;
- ``on_files``: adds them to the site as ``figures/NAME.png`` (generated files: nothing is
  written under docs/, so the git tree stays clean);
- ``on_page_markdown``: a line ``<!-- docs-figure: NAME.png -->`` of a page becomes the image
  and its caption, which states how the figure was made (``figures.FIGURES``).

A figure that cannot be computed stops the build with the reason and what to install.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository's iba, not an installed copy
    sys.path.insert(0, str(ROOT))

from docs_build import figures  # noqa: E402

log = logging.getLogger("mkdocs.hooks.figures")
MARKER = re.compile(r"^<!-- docs-figure: (?P<name>[\w.-]+) -->$", re.MULTILINE)
FOLDER = "figures"
INSTALL = "run nox -s docs, which installs them (noxfile.py DOCS_REQUIREMENTS)"
_built: dict[str, Path] = {}


def on_pre_build(config) -> None:
    """Compute the figures that are not cached."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        _built.update(figures.build(say=log.info))
    except ImportError as err:
        raise PluginError(
            f"the documentation's figures need {err.name or err}: {INSTALL} ({err})"
        ) from err
    except (RuntimeError, FileNotFoundError) as err:
        raise PluginError(f"a documentation figure failed: {err}") from err


def on_files(files, config):
    """Add the figures to the site."""
    for name, path in _built.items():
        files.append(File.generated(config, f"{FOLDER}/{name}", abs_src_path=str(path)))
    return files


def _figure(match: re.Match, page: str) -> str:
    name = match["name"]
    try:
        fig = figures.figure(name)
    except KeyError as err:
        raise PluginError(f"{page}: {err.args[0]}") from None
    return f"![{name}]({FOLDER}/{name})\n\nFigure: {fig.caption}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each figure marker by the image and its caption."""
    return MARKER.sub(lambda m: _figure(m, page.file.src_uri), markdown)
