"""The command line keeps JAX's compiled programs in its cache folder (``iba.cli._compile_cache``):
a later run loads them instead of compiling again. JAX reads the folder when it is imported, so
the checks run in fresh processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iba import cli

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import os
from iba import cli
with cli._compile_cache():
    import jax
    import jax.numpy as jnp
    print(jax.config.jax_compilation_cache_dir)
    print(float(jax.jit(lambda x: jnp.sin(x).sum())(jnp.arange(3.0))))
print(cli.COMPILE_CACHE_VARIABLE in os.environ)
"""


def run(env: dict[str, str]) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "iba"))
    # every compile is written (JAX's default keeps those over 1 s only)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return tmp_path


def test_a_command_writes_its_compiled_programs_to_the_cache_folder(clean_env):
    folder, result, still_set = run({})
    assert folder == str(clean_env / "iba" / "jax")
    assert float(result) == pytest.approx(math.sin(1.0) + math.sin(2.0), abs=1e-6)
    assert still_set == "False"  # the environment is restored after the command
    written = [p for p in (clean_env / "iba" / "jax").iterdir() if p.name.startswith("jit_")]
    assert written, "no compiled program was written to the cache folder"


def test_the_users_own_cache_folder_wins(clean_env):
    folder, _, still_set = run({"JAX_COMPILATION_CACHE_DIR": str(clean_env / "mine")})
    assert folder == str(clean_env / "mine")
    assert still_set == "True"  # the user's variable is theirs
    assert not (clean_env / "iba" / "jax").exists()


def test_a_process_that_imported_jax_already_is_left_alone(clean_env):
    import jax  # noqa: F401 - this session's JAX is loaded: its configuration is read

    assert "jax" in sys.modules
    with cli._compile_cache():
        assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
