"""The code blocks of the README and of every page of docs/, run or checked by the session of
their framework (``tests/torch/test_readme.py``, ``tests/keras/...``, ``tests/flax/...``,
``tests/interop/test_docs.py``). Imported as ``tests.readme_blocks``.

Every ```` ```python ```` and ```` ```bash ```` block of a page (:func:`pages`: the README and
``docs/*.md``, found by glob) is tagged by the line before it, ``<!-- readme-test: SESSION
CHAIN -->``, or a test fails naming the page and line (:func:`untagged`). ```` ```text ````
blocks are outputs and are not read.

Python blocks: SESSION is the framework whose session runs the block (``torch``, ``keras``,
``flax``; ``numpy`` blocks run in the torch session; ``interop`` blocks in the interop session),
and the blocks of one CHAIN of one page run in page order in one namespace (a later block
continues an example). Sample and step counts are made small (:data:`SMALL`) so that an example
takes seconds; everything else runs exactly as printed, in a temporary folder (the examples write
figures and files).

Bash blocks (all checked in the torch session), one command per line or joined by ``&&``:

- ``cli CHAIN``: its ``iba ...`` / ``python -m iba ...`` commands run through ``iba.cli.main``
  with small options (:data:`CLI_SMALL`) in a temporary folder; an image file a command names
  that does not exist there is the bundled photo ``chelsea``;
- ``setup``: set-up commands only (a virtual environment, ``pip install``, ``nox``);
- ``benchmark``: ``python benchmarks/SCRIPT.py ...`` lines (too long for CI): the script exists,
  the interpreter is ``python`` or a nox session's (``.nox/tests-NAME/bin/python``, with that
  session's environment), and the script's parser accepts the options (it is not run).

Set-up commands of any bash block are checked, not run (:func:`setup_problems`): CI (``.ci/run``)
creates its own environment and installs every session's packages with nox, so a ``pip install``
of a page must ask for what CI installs: the project's extras that ``pyproject.toml`` defines,
packages that a nox session (``iba/backends.py``) or ``.ci/run`` installs, ``--no-deps`` ones
that a session installs without dependencies, and the same version pins; a ``nox`` command is
the one ``.ci/run`` runs. A benchmark's ``pip install`` line is instead the one its script prints
when the package is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CI_RUN = ROOT / ".ci" / "run"
TAG = re.compile(r"<!-- readme-test: (?P<session>[\w-]+)(?: (?P<chain>[\w-]+))? -->")
# the sessions a block of each language may name
SESSIONS = {
    "python": ("torch", "numpy", "keras", "flax", "interop"),
    "bash": ("cli", "setup", "benchmark"),
}
# (pattern, replacement): the sizes a test runs the examples with
SMALL = (
    (re.compile(r"\bn_samples=\d+"), "n_samples=16"),
    (re.compile(r"\bsamples=\d+"), "samples=8"),  # as CLI_SMALL: one cached estimator
    (re.compile(r"\bn=\d+"), "n=16"),
    (re.compile(r"\bsteps=\d+"), "steps=3"),
    (re.compile(r"([\"'])steps\1: \d+"), r"\1steps\1: 3"),
    (re.compile(r"\bn_points=\d+"), "n_points=5"),
    (re.compile(r"\bpoints=\d+"), "points=3"),
)
# the small options of the command line's runs, where a command takes them
CLI_SMALL = {"--samples": "8", "--steps": "1", "--noise-samples": "1"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class Block(NamedTuple):
    """One code block of a page: its first code line, its tag (or ``None``), its code."""

    line: int
    session: str | None
    chain: str | None
    code: str
    language: str = "python"


def pages() -> list[Path]:
    """The README and every page of docs/ (a new page is read without a change here)."""
    return [README, *sorted(DOCS.glob("*.md"))]


def name(path: Path) -> str:
    """``path`` as the messages name it: relative to the repository."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def blocks(text: str | None = None, path: Path = README, language: str = "python") -> list[Block]:
    """Every ```` ```LANGUAGE ```` block of the page ``path`` (or of ``text``), in order."""
    lines = (path.read_text() if text is None else text).splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != f"```{language}":
            i += 1
            continue
        tag = TAG.fullmatch(lines[i - 1].strip()) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        session, chain = (tag["session"], tag["chain"]) if tag else (None, None)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(i + 2, session, chain, code, language))
        i = end + 1
    return found


def untagged(path: Path) -> list[str]:
    """``"PAGE:LINE"`` of each python or bash block of ``path`` that no test runs: no tag, a
    session unknown for its language, or a python / cli block without a chain."""
    bad = []
    for language, sessions in SESSIONS.items():
        for b in blocks(path=path, language=language):
            chained = b.chain is not None or b.session in ("setup", "benchmark")
            if b.session not in sessions or not chained:
                bad.append(f"{name(path)}:{b.line} ({language})")
    return bad


def chains(*sessions: str, path: Path = README) -> dict[str, list[Block]]:
    """``{"SESSION-CHAIN": blocks}`` of the python blocks of ``path`` tagged for ``sessions``,
    in order."""
    grouped: dict[str, list[Block]] = {}
    for block in blocks(path=path):
        if block.session in sessions:
            grouped.setdefault(f"{block.session}-{block.chain}", []).append(block)
    return grouped


def page_chains(*sessions: str) -> dict[str, tuple[Path, list[Block]]]:
    """``{"PAGE:SESSION-CHAIN": (page, blocks)}`` over every page of docs/ (not the README)."""
    return {
        f"{path.name}:{key}": (path, chain)
        for path in pages()[1:]
        for key, chain in chains(*sessions, path=path).items()
    }


def small(code: str) -> str:
    """``code`` with the sizes of :data:`SMALL`."""
    for pattern, replacement in SMALL:
        code = pattern.sub(replacement, code)
    return code


def run(
    chain: list[Block], folder: Path, monkeypatch, path: Path = README, cache: Path | None = None
) -> dict:
    """Run the blocks of one chain of the page ``path`` in ``folder``, in one namespace; returns
    the namespace. Estimators the library caches go to ``cache`` (``IBA_CACHE``; default: a
    folder in ``folder``), never to the user's cache.

    A failure's traceback names the page's line (the code is compiled at its line numbers)."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("IBA_CACHE", str(cache or folder / "iba-cache"))
    namespace: dict = {"__name__": "readme"}
    with warnings.catch_warnings():
        # the small sample counts of the test, not the README's
        warnings.filterwarnings("ignore", message="the estimator has seen only")
        for block in chain:
            code = "\n" * (block.line - 1) + small(block.code)
            exec(compile(code, str(path), "exec"), namespace)
    return namespace


# -- bash blocks ---------------------------------------------------------------------------------


class Command(NamedTuple):
    """One shell command of a bash block: its page line, environment prefix, words and kind."""

    line: int
    env: dict[str, str]
    argv: list[str]
    kind: str  # venv, activate, pip, nox, iba, script or unknown


def _python(word: str) -> bool:
    return Path(word).name in ("python", "python3")


def _kind(argv: list[str]) -> str:
    first = Path(argv[0]).name
    if _python(argv[0]) and argv[1:3] in (["-m", "venv"], ["-m", "pip"], ["-m", "iba"]):
        return {"venv": "venv", "pip": "pip", "iba": "iba"}[argv[2]]
    if argv[0] in (".", "source"):
        return "activate"
    if first in ("pip", "pip3"):
        return "pip"
    if first in ("nox", "iba"):
        return first
    if _python(argv[0]) and len(argv) > 1 and argv[1].endswith(".py"):
        return "script"
    return "unknown"


def commands(code: str, first_line: int = 1) -> list[Command]:
    """The commands of a bash block (continuation lines joined, comments dropped, ``&&``
    split, ``NAME=value`` prefixes as the environment)."""
    found = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i]
        i += 1
        words = shlex.split(text, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            part, words = words[:cut], words[cut + 1 :]
            env = {}
            while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", part[0]):
                key, value = part.pop(0).split("=", 1)
                env[key] = value
            if part:
                found.append(Command(first_line + start, env, part, _kind(part)))
    return found


# the command kinds each bash tag may hold
KINDS = {
    "cli": ("venv", "activate", "pip", "iba"),
    "setup": ("venv", "activate", "pip", "nox"),
    "benchmark": ("pip", "script"),
}


def bash_blocks() -> list[tuple[Path, Block]]:
    """Every bash block of every page, with its page."""
    return [(path, b) for path in pages() for b in blocks(path=path, language="bash")]


def _requirement(text: str) -> tuple[str, set[str], str]:
    """``(name, extras, version spec)`` of a pip requirement (``"."`` for this project)."""
    match = re.fullmatch(
        r"(?P<name>\.|[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])?(?P<spec>.*)", text
    )
    if match is None:
        return text, set(), ""
    extras = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
    package = match["name"] if match["name"] == "." else re.sub(r"[-_.]+", "-", match["name"])
    return package.lower(), extras, match["spec"].strip()


def _pip_requirements(argv: list[str]) -> tuple[list[str], bool]:
    """The requirements of a ``pip install`` command and whether it has ``--no-deps``."""
    words = argv[argv.index("install") + 1 :]
    return [w for w in words if not w.startswith("-")], "--no-deps" in words


def ci_installs() -> tuple[dict[str, set[str]], set[str]]:
    """What CI installs: ``({package: its version specs}, {--no-deps packages})``, from every
    nox session of ``iba/backends.py`` and from ``.ci/run``."""
    from iba import backends

    sessions = (*backends.BACKENDS, backends.INTEROP)
    plain = [r for b in sessions for r in b.requirements]
    plain += list(backends.CONFORMANCE_REQUIREMENTS)
    no_deps = {p for b in sessions for p in b.no_deps} | set(backends.CONFORMANCE_NO_DEPS)
    for command in commands(CI_RUN.read_text()):
        if command.kind == "pip":
            plain += _pip_requirements(command.argv)[0]
    specs: dict[str, set[str]] = {}
    for text in plain:
        package, _, spec = _requirement(text)
        specs.setdefault(package, set()).add(spec)
    return specs, {_requirement(p)[0] for p in no_deps}


def extras() -> set[str]:
    """The extras of ``pyproject.toml`` (the keys of its optional-dependencies table)."""
    text = (ROOT / "pyproject.toml").read_text()
    table = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = ", table, flags=re.M))


def setup_problems(path: Path, block: Block) -> list[str]:
    """What is wrong with the set-up commands of one bash block: commands its tag does not
    allow, and ``pip install`` / ``nox`` lines that CI does not run (see the module's doc)."""
    problems = []
    specs, no_deps = ci_installs()
    benchmark_text = "\n".join(p.read_text() for p in sorted((ROOT / "benchmarks").glob("*.py")))
    ci_nox = [c.argv[1:] for c in commands(CI_RUN.read_text()) if c.kind == "nox"]
    for command in commands(block.code, block.line):
        where = f"{name(path)}:{command.line}"
        shown = shlex.join(command.argv)
        if command.kind not in KINDS.get(block.session or "", ()):
            problems.append(f"{where}: {shown!r}: a {block.session} block runs no such command")
        elif command.kind == "nox" and command.argv[1:] not in ci_nox:
            problems.append(f"{where}: {shown!r}: .ci/run runs no such nox command")
        elif command.kind == "pip" and block.session == "benchmark":
            if shown not in benchmark_text:
                problems.append(f"{where}: {shown!r}: no script of benchmarks/ names this line")
        elif command.kind == "pip":
            problems += [f"{where}: {p}" for p in _pip_problems(command.argv, specs, no_deps)]
    return problems


def _pip_problems(argv: list[str], specs: dict[str, set[str]], no_deps: set[str]) -> list[str]:
    requirements, without_deps = _pip_requirements(argv)
    problems = []
    for text in requirements:
        package, wanted, spec = _requirement(text)
        if package in (".", "iba"):
            unknown = sorted(wanted - extras())
            if unknown:
                problems.append(f"{text!r}: pyproject.toml has no extra {', '.join(unknown)}")
        elif without_deps and package not in no_deps:
            problems.append(f"{text!r}: no nox session installs it with --no-deps")
        elif not without_deps and package not in specs:
            problems.append(f"{text!r}: neither a nox session nor .ci/run installs it")
        elif spec.startswith("==") and spec not in specs.get(package, ()):
            pins = sorted(specs.get(package, ()))
            problems.append(f"{text!r}: CI installs {package} {pins}, not {spec}")
    return problems


def cli_options(subcommand: str) -> set[str] | None:
    """The options ``iba SUBCOMMAND`` accepts (``None``: no such subcommand)."""
    from iba import cli

    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices.get(subcommand)
    return None if parser is None else set(parser._option_string_actions)


def run_cli(path: Path, chain: list[Block], folder: Path, monkeypatch, cache: Path) -> list[str]:
    """Run the ``iba`` commands of one cli chain of ``path`` in ``folder`` through
    ``iba.cli.main`` with :data:`CLI_SMALL` and the estimators cached in ``cache``; returns what
    each printed. A failing command raises naming the page's line."""
    import numpy as np
    from PIL import Image

    from iba import cli
    from iba.demo import photos

    monkeypatch.chdir(folder)
    monkeypatch.setenv("IBA_CACHE", str(cache))
    printed = []
    for block in chain:
        for command in commands(block.code, block.line):
            if command.kind != "iba":
                continue
            argv = command.argv[3:] if _python(command.argv[0]) else command.argv[1:]
            shown = shlex.join(command.argv)
            accepted = cli_options(argv[0]) if argv else None
            assert accepted is not None, f"{name(path)}:{command.line}: {shown}: no such command"
            extra = [
                w for k, v in CLI_SMALL.items() if k in accepted and k not in argv for w in (k, v)
            ]
            for word in argv[1:]:
                if word.lower().endswith(IMAGE_SUFFIXES) and not Path(word).exists():
                    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(word)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main([*argv, *extra])
            assert status == 0, f"{name(path)}:{command.line}: {shlex.join(argv)}: {err.getvalue()}"
            printed.append(out.getvalue())
    return printed


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once a script's options are parsed."""


def check_benchmark(path: Path, command: Command, monkeypatch) -> argparse.Namespace:
    """The options of a benchmark command, parsed by its script's own parser (the script's
    ``main`` stops there); raises naming the page's line when the interpreter is a path but no
    nox session's, the environment does not match it or the script or an option is unknown."""
    from iba import backends

    where = f"{name(path)}:{command.line}"
    interpreter, script, *args = command.argv
    if interpreter not in ("python", "python3"):  # a path: a nox session's python
        venv = re.fullmatch(r"\.nox/tests-(?P<session>[\w-]+)/bin/python3?", interpreter)
        assert venv and venv["session"] in backends.names(), (
            f"{where}: {interpreter}: not the python of a nox session .nox/tests-NAME "
            f"(NAME one of {', '.join(backends.names())})"
        )
        session = backends.backend(venv["session"])
        wanted = {"IBA_BACKEND": session.name, **session.env}
        wrong = {k: v for k, v in command.env.items() if wanted.get(k, v) != v}
        assert not wrong, f"{where}: {wrong} does not match the session {session.name}'s {wanted}"
    assert (ROOT / script).is_file(), f"{where}: {script}: no such script"

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    original = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as exit:
        raise AssertionError(f"{where}: {script} refuses the options {args}") from exit
    raise AssertionError(f"{where}: {script} parsed no options")
