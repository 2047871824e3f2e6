"""The README's and docs' PyTorch and NumPy examples run as written, their command-line blocks
run, their set-up and benchmark commands are what CI and the scripts run
(``tests/readme_blocks.py``), every python and bash block of every page is tagged, and the
README's install lines are the command line's."""

from __future__ import annotations

import numpy as np
import pytest

from iba.demo import runners
from tests import readme_blocks

CHAINS = readme_blocks.chains("torch", "numpy")
DOC_CHAINS = readme_blocks.page_chains("torch", "numpy")
BASH = readme_blocks.bash_blocks()
CLI_CHAINS: dict[str, list] = {}
for _path, _block in BASH:
    if _block.session == "cli":
        CLI_CHAINS.setdefault(f"{_path.name}:{_block.chain}", []).append(_block)
BENCHMARKS = [
    (path, command)
    for path, block in BASH
    if block.session == "benchmark"
    for command in readme_blocks.commands(block.code, block.line)
    if command.kind == "script"
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One estimator cache (``IBA_CACHE``) for the command-line blocks and the docs' examples:
    the quick start's estimator of EfficientNet-Lite0 serves the other runs (the command-line
    test runs first)."""
    return tmp_path_factory.mktemp("cli-cache")


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_readme_example_runs(chain, tmp_path, monkeypatch):
    namespace = readme_blocks.run(CHAINS[chain], tmp_path, monkeypatch)
    if chain == "torch-efficientnet":
        assert namespace["heatmap"].shape == (224, 224) and namespace["heatmap"].max() > 0
        assert 281 <= int(namespace["target"][0]) <= 285  # chelsea: a cat class
        assert (tmp_path / "chelsea-iba.png").stat().st_size > 10_000
        assert namespace["explanation"].capacity.shape == (1, 40, 28, 28)
        assert namespace["maps"].shape == (1, 224, 224)
        assert 0 <= namespace["ratio"] <= 1
    if chain == "torch-m2ib":
        maps = namespace["maps"]
        assert maps.image_maps.shape == (2, 224, 224) and np.all(maps.image_maps.max((1, 2)) == 1)
        assert [w.text for w in maps.text_maps[1].words] == ["a", "cup", "of", "espresso"]
        assert np.all(maps.similarity > 0.05)
    if chain == "torch-text":
        assert [m.prediction for m in namespace["maps"]] == [1, 0]  # fresh, then rotten
        assert (tmp_path / "text.png").stat().st_size > 5_000


@pytest.mark.parametrize("chain", sorted(CLI_CHAINS))
def test_the_command_line_blocks_run(chain, tmp_path, monkeypatch, cache):
    path = next(p for p, b in BASH if b in CLI_CHAINS[chain])
    printed = readme_blocks.run_cli(path, CLI_CHAINS[chain], tmp_path, monkeypatch, cache)
    assert printed, f"{chain}: no iba command"
    if chain == "README.md:quick-start":
        assert "\nchelsea: " in printed[0] and "\nquokka: " in printed[0]
        assert (tmp_path / "iba-output" / "chelsea.npy").exists()
    elif chain == "README.md:text":
        assert "text 1: fresh" in printed[0] and "text 2: rotten" in printed[0]
    elif chain == "README.md:m2ib":
        assert printed[0].startswith("pair 1 'a tabby cat': cosine similarity ")
        assert (tmp_path / "iba-output" / "pairs.png").exists()


@pytest.mark.parametrize("chain", sorted(DOC_CHAINS))
def test_docs_example_runs(chain, tmp_path, monkeypatch, cache):
    path, blocks = DOC_CHAINS[chain]
    namespace = readme_blocks.run(blocks, tmp_path, monkeypatch, path=path, cache=cache)
    if chain == "metrics.md:torch-metrics":
        assert namespace["maps"].shape == (2, 32, 32)
        assert 0 <= namespace["box"].mean <= 1 and 0 <= namespace["box"].mass_mean <= 1
    elif chain == "mathematics.md:torch-text-preset":
        assert namespace["token_map"].shape == (1, namespace["ids"].shape[1])
        assert namespace["token_map"].max() == 1.0
    elif chain == "dataset.md:torch-dataset":
        assert namespace["result"].images_per_second > 0
        (summary,) = namespace["dataset"].summarize("results/")
        assert summary.metric == "degradation" and summary.n == 1


def test_every_block_of_every_page_is_tagged():
    pages = readme_blocks.pages()
    assert readme_blocks.README in pages and len(pages) > 5  # docs/*.md found
    untagged = [where for path in pages for where in readme_blocks.untagged(path)]
    assert not untagged, (
        f"the blocks at {', '.join(untagged)} are run by no test; tag each python block with "
        "<!-- readme-test: SESSION CHAIN --> and each bash block with <!-- readme-test: cli "
        "CHAIN -->, <!-- readme-test: setup --> or <!-- readme-test: benchmark --> (see "
        "tests/readme_blocks.py)"
    )


def test_the_setup_commands_are_what_ci_runs():
    problems = [p for path, block in BASH for p in readme_blocks.setup_problems(path, block)]
    assert not problems, "\n".join(problems)
    kinds = {c.kind for _, b in BASH for c in readme_blocks.commands(b.code)}
    assert {"venv", "activate", "pip", "nox", "iba", "script"} <= kinds


def test_a_setup_line_that_ci_does_not_run_is_named(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        '<!-- readme-test: setup -->\n```bash\npip install torch==2.0 ".[torch,gpu]" left-pad'
        " && pip install --no-deps transformers && nox -s lint && iba demo\n```\n"
    )
    (block,) = readme_blocks.blocks(path=page, language="bash")
    problems = [p.split(": ", 1)[1] for p in readme_blocks.setup_problems(page, block)]
    assert problems == [
        "'torch==2.0': CI installs torch ['==2.13.0'], not ==2.0",
        "'.[torch,gpu]': pyproject.toml has no extra gpu",
        "'left-pad': neither a nox session nor .ci/run installs it",
        "'transformers': no nox session installs it with --no-deps",
        "'nox -s lint': .ci/run runs no such nox command",
        "'iba demo': a setup block runs no such command",
    ]


@pytest.mark.parametrize(
    ("path", "command"), BENCHMARKS, ids=[f"{p.name}:{c.line}" for p, c in BENCHMARKS]
)
def test_the_benchmark_commands_parse(path, command, monkeypatch):
    args = readme_blocks.check_benchmark(path, command, monkeypatch)
    if "--markdown" in command.argv:
        assert str(args.markdown) == command.argv[command.argv.index("--markdown") + 1]
    if "--backend" in command.argv:
        assert args.backend == command.argv[command.argv.index("--backend") + 1]


def test_a_benchmark_option_the_script_refuses_is_named(monkeypatch):
    (command,) = readme_blocks.commands(
        "IBA_BACKEND=torch .nox/tests-torch/bin/python benchmarks/m2ib.py --backend caffe\n", 7
    )
    with pytest.raises(AssertionError, match=r"page.md:7: benchmarks/m2ib.py refuses the options"):
        readme_blocks.check_benchmark(readme_blocks.ROOT / "page.md", command, monkeypatch)
    (command,) = readme_blocks.commands("IBA_BACKEND=flax .nox/tests-torch/bin/python x.py\n")
    with pytest.raises(AssertionError, match="does not match the session torch"):
        readme_blocks.check_benchmark(readme_blocks.ROOT / "page.md", command, monkeypatch)


def test_the_tags_are_read():
    text = "<!-- readme-test: torch a -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    first, second = readme_blocks.blocks(text)
    assert first == readme_blocks.Block(3, "torch", "a", "x = 1\n")
    assert second.session is None and second.line == 7
    assert readme_blocks.small("f(n=1000, n_samples=5000, steps=50)") == (
        "f(n=16, n_samples=16, steps=3)"
    )
    assert readme_blocks.small('g(samples=900, points=100, config={"steps": 10})') == (
        'g(samples=8, points=3, config={"steps": 3})'
    )
    text = "<!-- readme-test: setup -->\n```bash\nA=1 python -m iba demo \\\n  --seed 2 && nox # x\n```\n"
    (block,) = readme_blocks.blocks(text, language="bash")
    assert (block.session, block.chain, block.line) == ("setup", None, 3)
    first, second = readme_blocks.commands(block.code, block.line)
    assert first == readme_blocks.Command(
        3, {"A": "1"}, ["python", "-m", "iba", "demo", "--seed", "2"], "iba"
    )
    assert second == readme_blocks.Command(3, {}, ["nox"], "nox")


@pytest.mark.parametrize("keras_backend", runners.KERAS_BACKENDS)
def test_the_readme_gives_the_keras_install_line_of_each_backend(keras_backend, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", keras_backend)
    line = runners.install_line("keras")
    readme = readme_blocks.README.read_text()
    assert f"| `{line}` | `KERAS_BACKEND={keras_backend} iba demo --backend keras` |" in readme


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_readme_gives_the_install_line_of_each_backend(backend):
    line = runners.install_line(backend)
    readme = readme_blocks.README.read_text()
    run = "iba demo" if backend == "torch" else f"iba demo --backend {backend}"
    assert f"| `{line}` | `{run}` |" in readme
