"""The floors of the project, imports pointing down only, and its one registry of backends.

4 application: ``iba.cli``, ``iba.pair_cli``, ``iba.demo``, ``iba.plot``, ``iba.pairplot`` (finds
  engines by registered name)
3 engines: ``iba_torch``, ``iba_tf``, ``iba_jax``
2 driver and math: the rest of ``iba``
1 model data: ``iba.models``

Checked on the source with :mod:`ast`: no module of ``iba`` imports an adapter (``import``,
``from ... import``, or ``importlib.import_module`` / ``__import__`` of a literal name); every name
an adapter imports from ``iba`` exists, with NumPy alone; and the registry ``iba/backends.py``
names the same backends as nox's sessions, the conformance suite, pyproject.toml's entry points
and extras.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import types
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from pathlib import Path

import pytest

from iba import backends
from iba.demo import runners

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("iba_torch", "iba_tf", "iba_jax")
APPLICATION = (
    "iba.cli",
    "iba.pair_cli",
    "iba.dataset",
    "iba.dataset_cli",
    "iba.dataset_ray",
    "iba.demo",
    "iba.plot",
    "iba.pairplot",
    "iba.__main__",
)
IMPORTERS = {"import_module", "__import__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path``: ``import a.b`` gives
    ``("a.b", [])``, ``from a import b, c`` gives ``("a", ["b", "c"])``, and
    ``importlib.import_module("a.b")`` or ``__import__("a.b")`` gives ``("a.b", [])``."""
    found = []
    package = _module_name(path) if path.is_relative_to(ROOT) else ""
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the module's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in IMPORTERS and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    found.append((node.lineno, first.value, []))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def _is_under(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "import iba_torch.runner\n"
        "from iba_tf import IBA\n"
        "import importlib\n"
        "importlib.import_module('iba_jax.models')\n"
        "__import__('iba_torch')\n"
        "from importlib import import_module as load\n"
        "import_module('iba_tf')\n"
    )
    tops = [_top(module) for _, module, _ in _imports(source)]
    assert tops.count("iba_torch") == 2 and tops.count("iba_tf") == 2 and "iba_jax" in tops


def test_no_module_of_iba_imports_an_adapter():
    bad = [
        f"{_where(path, line)}: {module}"
        for path in _modules("iba")
        for line, module, _ in _imports(path)
        if _top(module) in ADAPTERS
    ]
    assert not bad, (
        "the core imports an adapter (use the iba.backends entry points):\n" + "\n".join(bad)
    )


def test_floor_2_imports_no_application():
    """The driver and the math import nothing of the command line, the demo or the plots."""
    bad = []
    for path in _modules("iba"):
        if _is_under(_module_name(path), APPLICATION):
            continue
        for line, module, names in _imports(path):
            targets = [module] + [f"{module}.{n}" for n in names if module == "iba"]
            bad += [f"{_where(path, line)}: {t}" for t in targets if _is_under(t, APPLICATION)]
    assert not bad, "\n".join(bad)


def test_floor_1_imports_nothing_of_iba_above_it():
    bad = [
        f"{_where(path, line)}: {module}"
        for path in _modules("iba/models")
        for line, module, _ in _imports(path)
        if _top(module) in ("iba", *ADAPTERS) and not _is_under(module, ["iba.models"])
    ]
    assert not bad, "\n".join(bad)


def test_the_registry_imports_the_standard_library_only():
    path = ROOT / "iba" / "backends.py"
    outside = [m for _, m, _ in _imports(path) if _top(m) not in sys.stdlib_module_names]
    assert outside == []
    # loaded by its path, as noxfile.py does: no iba, no NumPy
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('registry', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.names(), 'numpy' in sys.modules, 'iba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{backends.names()} False False"


def _adapter_imports_of_iba():
    for package in ADAPTERS:
        for path in _modules(package):
            for line, module, names in _imports(path):
                if _top(module) == "iba":
                    yield path, line, module, names


def test_adapters_import_only_names_that_exist():
    """Every ``from iba.x import y`` of an adapter resolves with NumPy alone."""
    bad = []
    seen = list(_adapter_imports_of_iba())
    assert seen, "the scan found no import of iba in the adapters"
    for path, line, module, names in seen:
        try:
            imported = importlib.import_module(module)
        except ImportError as err:
            bad.append(f"{_where(path, line)}: import {module}: {err}")
            continue
        for name in names:
            if hasattr(imported, name):
                continue
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                bad.append(f"{_where(path, line)}: from {module} import {name}: no such name")
    assert not bad, "\n".join(bad)


def test_each_adapter_imports_no_other_adapter():
    bad = [
        f"{_where(path, line)}: {module}"
        for package in ADAPTERS
        for path in _modules(package)
        for line, module, _ in _imports(path)
        if _top(module) in ADAPTERS and _top(module) != package
    ]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------- the one registry


def _nox_sessions() -> list[str]:
    """The sessions ``noxfile.py`` defines, as ``nox -l`` names them, read with a stand-in for
    nox that records its decorators."""
    sessions = []

    def session(func):
        params = getattr(func, "params", None)
        sessions.extend([f"{func.__name__}({i})" for i in params] if params else [func.__name__])
        return func

    def parametrize(arg, values, ids=None):
        def decorate(func):
            func.params = list(ids or values)
            return func

        return decorate

    stand_in = types.ModuleType("nox")
    stand_in.session, stand_in.parametrize = session, parametrize
    stand_in.options, stand_in.Session = types.SimpleNamespace(), object
    saved = sys.modules.get("nox")
    sys.modules["nox"] = stand_in
    try:
        spec = importlib.util.spec_from_file_location("_noxfile", ROOT / "noxfile.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        if saved is None:
            del sys.modules["nox"]
        else:
            sys.modules["nox"] = saved
    return sessions


def test_nox_sessions_are_the_registrys_backends():
    expected = [f"tests({name})" for name in backends.names()] + [
        backends.INTEROP.name,
        "conformance",
        "lint",
        "typecheck",
        "docs",
    ]
    assert _nox_sessions() == expected
    assert backends.names() == [
        "numpy", "torch", "keras-tensorflow", "keras-jax", "keras-torch", "flax",
    ]  # fmt: skip


def test_conformance_backends_are_the_registrys():
    from conformance import backends as conformance_backends
    from conformance import real_model

    assert list(conformance_backends.BACKENDS) == backends.conformance_names()
    assert set(real_model.BACKENDS) <= set(backends.conformance_names())
    assert [b.engine for b in backends.runner_backends().values()] == [
        real_model.BACKENDS[name][0] for name in real_model.BACKENDS
    ]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_entry_points_are_the_registrys_engines():
    points = _pyproject()["project"]["entry-points"][backends.ENTRY_POINT_GROUP]
    assert list(points) == backends.engine_names()
    for value in points.values():  # each in its own adapter, a runner module
        assert value.split(".")[0] in ADAPTERS and value.split(":")[0].endswith(".runner"), value
        assert (ROOT / (value.split(":")[0].replace(".", "/") + ".py")).is_file(), value
    assert {b.engine for b in backends.BACKENDS} - {None} == set(backends.engine_names())


def test_the_registrys_requirements_name_existing_extras_and_folders():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    requirements = [r for b in (*backends.BACKENDS, backends.INTEROP) for r in b.requirements]
    requirements += list(backends.CONFORMANCE_REQUIREMENTS)
    used = {
        extra.strip()
        for r in requirements
        if r.startswith(".[")
        for extra in r[2 : r.index("]")].split(",")
    }
    assert used and used <= extras, used - extras
    for b in (*backends.BACKENDS, backends.INTEROP):
        for folder in b.tests:
            assert (ROOT / folder).is_dir(), folder


def test_installed_entry_points_are_the_registrys_engines():
    """What the command line finds: the installed package's metadata (reinstall after editing
    pyproject.toml)."""
    try:
        distribution("iba")
    except PackageNotFoundError:
        pytest.skip("iba is not installed (pip install .): no entry points to read")
    assert set(backends.engine_names()) <= set(runners._entry_points())


# ----------------------------------------------------------------------- the lookup


def test_an_unknown_backend_names_the_registrys():
    with pytest.raises(
        ValueError, match="unknown backend 'mxnet'; backends are: torch, keras, jax"
    ):
        runners.runner("mxnet")


def test_a_missing_framework_gives_the_install_hint(monkeypatch):
    point = EntryPoint("torch", "iba_no_such_framework.runner:Runner", "iba.backends")
    monkeypatch.setattr(runners, "_entry_points", lambda: {"torch": point})
    with pytest.raises(runners.Unavailable) as info:
        runners.runner("torch")
    assert str(info.value) == (
        f"the torch backend needs iba_no_such_framework: {backends.engine('torch').install}"
    )


def test_an_unregistered_engine_says_to_install_iba(monkeypatch):
    monkeypatch.setattr(runners, "_entry_points", dict)
    with pytest.raises(runners.Unavailable, match="no runner is registered for the jax backend"):
        runners.runner("jax")


def test_a_registered_runner_is_found(monkeypatch):
    class Fake(runners.Runner):
        name = "fake"

        def __init__(self, model=None):
            self.model = model

    module = types.ModuleType("iba_fake_runner")
    module.Fake = Fake
    monkeypatch.setitem(sys.modules, "iba_fake_runner", module)
    point = EntryPoint("fake", "iba_fake_runner:Fake", "iba.backends")
    monkeypatch.setattr(runners, "_entry_points", lambda: {"fake": point})
    assert runners.runner("fake", model="m").model == "m"
    assert "fake" in runners.names()
