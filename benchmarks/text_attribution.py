"""Which layer and beta work for text IBA: a comparison with token baselines on held-out snippets.

    IBA_BACKEND=torch .nox/tests-torch/bin/python benchmarks/text_attribution.py
        [--snippets 200] [--layers 1] [--betas 10] [--pairs LAYER:BETA ...] [--preset-layers]
        [--authors-layers] [--estimate-snippets 2000] [--estimator-dir DIR] [--replacement mask] [--ig-steps 50]
        [--methods gradient_x_input integrated_gradients occlusion random]
        [--markdown FILE] [--threads 2]

On the bundled sentiment model (``iba_torch.text.minilm_sentiment``: all-MiniLM-L6-v2, mean
pooling, a logistic head) and the first ``--snippets`` snippets of the held-out test split of
``iba.models.sentiment_head`` (never seen by the head), every method explains the model's
predicted class, and each map is scored on two measures:

- **deletion** (``iba.evaluation.text_degradation``, docs/mathematics.md section 7.6): the
  tokens with the highest values are replaced by ``[MASK]`` (``--replacement unk``: ``[UNK]``), 10 %
  to 90 % of each snippet's deletable tokens (its real tokens less ``[CLS]`` / ``[SEP]``); the
  *area* is the mean target probability over those 9 fractions (lower is better: the map found
  what the prediction rests on), ``acc@50%`` the share still predicted as before with half the
  tokens gone (lower is better);
- **VADER top word**: how often the word with the largest value is a sentiment word of the VADER
  lexicon (Hutto and Gilbert, 2014; 7,500 entries rated by people, not by any of the methods),
  and how often that word's VADER polarity agrees with the predicted class (fresh: positive).
  A word is a run of wordpieces with one word id of the tokenizer (``iba.text.merge_wordpieces``);
  IBA's word value is its ``word_bits``, a baseline's the sum of its token values over the word,
  special tokens excluded.

The methods (all on the same tokens; padding, ``[CLS]`` and ``[SEP]`` are never deleted):

- text IBA with the **corpus** estimator (``iba_torch.text.TextIBA``, project defaults, one
  estimator per layer fitted once on ``--estimate-snippets`` training snippets) at every
  ``--layers`` x ``--betas``;
- the authors' preset ``iba.text_config(estimator="sentence")`` (statistics of each snippet
  alone at the bottleneck's own layer, docs/mathematics.md section 6.2) at ``--preset-layers``;
- the authors' **pipeline** at ``--authors-layers``: the preset with statistics fitted on the
  snippet's own input of that layer (``hidden_states[layer]``, docs/mathematics.md section 6.2);
- ``iba_torch.text_baselines``: gradient x input and integrated gradients (``[PAD]`` baseline,
  ``--ig-steps``) on the word embeddings, leave-one-token-out occlusion (the token replaced by
  the same id as in the deletion), and uniform random values.

``s/text`` is the wall time of the explanations divided by the snippets (the estimator's fit
is printed apart). The VADER lexicon is read from the ``vaderSentiment`` wheel's
``vaderSentiment/vader_lexicon.txt``, found through the installed distribution's metadata
(the package is not imported); install it with
``.nox/tests-torch/bin/python -m pip install --no-deps vaderSentiment``.

The default (200 snippets, the baselines, and IBA after layer 1 at beta 10: the setting that did
best in docs/text.md) took about 17 minutes on 2 shared CPU cores; each further IBA setting adds
0.5 to 7 s per snippet there (the preset the most), so explore a grid on fewer snippets, e.g.
``--snippets 40 --layers 0 1 2 3 4 5 --betas 1 10 100 --preset-layers 3 --authors-layers 3``
(``--estimator-dir`` keeps the corpus estimators between runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

BASELINE_METHODS = ("gradient_x_input", "integrated_gradients", "occlusion", "random")
SHORT = {
    "gradient_x_input": "grad x input",
    "integrated_gradients": "integrated gradients",
    "occlusion": "occlusion",
    "random": "random",
}
INSTALL_VADER = ".nox/tests-torch/bin/python -m pip install --no-deps vaderSentiment"
CHUNK = 16  # snippets per baseline call, sorted by length (little padding)


def vader_lexicon() -> dict[str, float]:
    """``{word: mean valence}`` from the installed ``vaderSentiment`` wheel's lexicon file."""
    try:
        dist = metadata.distribution("vaderSentiment")
    except metadata.PackageNotFoundError:
        sys.exit(f"the VADER lexicon ships in the vaderSentiment wheel: {INSTALL_VADER}")
    path = Path(str(dist.locate_file("vaderSentiment/vader_lexicon.txt")))
    if not path.exists():
        sys.exit(f"{path} is missing from the vaderSentiment install: {INSTALL_VADER}")
    lexicon = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].strip():
            lexicon[parts[0].strip().lower()] = float(parts[1])
    return lexicon


@dataclass
class Row:
    """One line of the table."""

    method: str
    layer: str = "-"
    beta: str = "-"
    estimator: str = "-"
    area: float = np.nan
    acc50: float = np.nan
    vader: float = np.nan
    agree: float = np.nan
    seconds: float = np.nan
    notes: list[str] = field(default_factory=list)


class Snippets:
    """The held-out snippets, tokenised once: ids ``(N, T)``, masks, words and the predictions."""

    def __init__(self, model, texts: list[str], labels: np.ndarray):
        import torch

        self.model, self.texts, self.truth = model, texts, labels
        tok = model.tokenizer
        enc = tok(
            texts,
            padding=True,
            truncation=True,
            max_length=model.max_length,
            return_tensors="np",
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        self.ids = enc["input_ids"].astype(np.int64)
        self.real = enc["attention_mask"].astype(bool)
        self.special = enc["special_tokens_mask"].astype(bool) & self.real
        self.lengths = self.real.sum(1)
        self.tokens = [enc.tokens(i) for i in range(len(texts))]
        from iba.text import merge_wordpieces

        self.words = [
            merge_wordpieces(enc.word_ids(i), [tuple(o) for o in enc["offset_mapping"][i]], t)
            for i, t in enumerate(texts)
        ]
        self.pad_id = int(tok.pad_token_id)
        if (self.ids[self.real] == self.pad_id).any():
            raise RuntimeError("a real token has the padding id; the deletion needs them apart")
        with torch.no_grad():
            self.logits = self.call(self.ids)
        self.predicted = self.logits.argmax(1)

    def call(self, ids: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The model's logits on token ids (padding = the pad id), batch by batch, each batch cut
        to its longest row."""
        import torch

        out = []
        for start in range(0, len(ids), batch_size):
            part = ids[start : start + batch_size]
            mask = part != self.pad_id
            width = int(np.flatnonzero(mask.any(0)).max()) + 1 if mask.any() else 1
            inputs = {
                "input_ids": torch.from_numpy(part[:, :width]),
                "attention_mask": torch.from_numpy(mask[:, :width].astype(np.int64)),
                "token_type_ids": torch.zeros(len(part), width, dtype=torch.int64),
            }
            with torch.no_grad():
                out.append(self.model(**inputs).double().numpy())
        return np.concatenate(out)

    def chunks(self):
        """``(indices, inputs)``: snippets sorted by length in groups of ``CHUNK``, tokenised
        with padding to the group's longest and the special-token mask."""
        order = np.argsort(self.lengths, kind="stable")
        for start in range(0, len(order), CHUNK):
            index = order[start : start + CHUNK]
            width = int(self.lengths[index].max())
            import torch

            yield (
                index,
                {
                    "input_ids": torch.from_numpy(self.ids[index, :width]),
                    "attention_mask": torch.from_numpy(self.real[index, :width].astype(np.int64)),
                    "token_type_ids": torch.zeros(len(index), width, dtype=torch.int64),
                    "special_tokens_mask": torch.from_numpy(
                        self.special[index, :width].astype(np.int64)
                    ),
                },
            )


def top_words(snippets: Snippets, maps: np.ndarray) -> list[str | None]:
    """The word with the largest summed value per snippet (first on ties; ``None``: no word)."""
    from iba.text import word_sums

    out: list[str | None] = []
    for i, words in enumerate(snippets.words):
        if not words:
            out.append(None)
            continue
        values = word_sums(maps[i], words)
        out.append(words[int(np.argmax(values))].text)
    return out


def score(row: Row, snippets: Snippets, maps: np.ndarray, words: list, args, lexicon) -> Row:
    """Fill the row's deletion and VADER columns."""
    from iba.evaluation import text_degradation

    tok = snippets.model.tokenizer
    replacement = tok.mask_token_id if args.replacement == "mask" else tok.unk_token_id
    result = text_degradation(
        snippets.call,
        snippets.ids,
        maps,
        snippets.predicted,
        replacement_id=int(replacement),
        deletable=snippets.real & ~snippets.special,
        progress=False,
    )
    row.area = float(result.mean[1:].mean())
    row.acc50 = float(result.accuracy[list(np.round(result.fractions, 6)).index(0.5)])
    hits, agree = [], []
    for word, label in zip(words, snippets.predicted):
        valence = None if word is None else lexicon.get(word.lower())
        hits.append(valence is not None)
        agree.append(valence is not None and (valence > 0) == (label == 1))
    row.vader, row.agree = float(np.mean(hits)), float(np.mean(agree))
    return row


def run_baseline(name: str, snippets: Snippets, args) -> np.ndarray:
    from iba_torch import text_baselines as tb

    tok = snippets.model.tokenizer
    options: dict = {}
    if name == "integrated_gradients":
        options = {"steps": args.ig_steps, "baseline": "pad"}
    elif name == "occlusion":
        replacement = tok.mask_token_id if args.replacement == "mask" else tok.unk_token_id
        options = {"replacement_id": int(replacement)}
    maps = np.zeros(snippets.ids.shape)
    for index, inputs in snippets.chunks():
        width = inputs["input_ids"].shape[1]
        target = snippets.predicted[index]
        maps[index, :width] = tb.BASELINES[name](snippets.model, inputs, target, **options)
    return maps


def iba_maps(explainer, snippets: Snippets) -> tuple[np.ndarray, list]:
    """``(token bits (N, T), top words)`` of a ``TextIBA`` on the snippets."""
    token_maps = explainer.explain(snippets.texts, target=snippets.predicted)
    maps = np.zeros(snippets.ids.shape)
    for i, m in enumerate(token_maps):
        real = np.flatnonzero(snippets.real[i])
        if list(m.tokens) != [snippets.tokens[i][k] for k in real]:
            raise RuntimeError(f"snippet {i}: TextIBA tokenised it differently")
        maps[i, real] = m.token_bits
    words = [m.words[int(np.argmax(m.word_bits))].text if m.words else None for m in token_maps]
    return maps, words


def authors_pipeline_maps(snippets: Snippets, layer: int) -> np.ndarray:
    """The authors' pipeline (docs/mathematics.md section 6.2): per snippet, the preset with the
    statistics of its own input to ``encoder.layer[layer]`` (``hidden_states[layer]``, n = 1)."""
    import torch

    import iba
    from iba_torch import IBA

    model = snippets.model
    maps = np.zeros(snippets.ids.shape)
    config = iba.text_config()
    for i in range(len(snippets.texts)):
        k = int(snippets.lengths[i])
        inputs = {
            "input_ids": torch.from_numpy(snippets.ids[i : i + 1, :k]),
            "attention_mask": torch.ones(1, k, dtype=torch.int64),
            "token_type_ids": torch.zeros(1, k, dtype=torch.int64),
        }
        with torch.no_grad():
            hidden = model.bert(**inputs, output_hidden_states=True).hidden_states[layer]
        estimator = iba.Estimator(layout="tokens")
        estimator.update(hidden.double().numpy())
        explainer = IBA(
            f"bert.encoder.layer.{layer}",
            layout="tokens",
            strategy="plain",
            config=config,
            estimators=[estimator],
        )
        heat = explainer.analyze(model, inputs, target=int(snippets.predicted[i]))
        maps[i, :k] = np.asarray(heat)[0]
    return maps


def format_table(rows: list[Row]) -> list[str]:
    """The table as Markdown lines."""
    head = (
        "| method | layer | beta | estimator | deletion area | acc@50% | VADER top word "
        "| polarity agrees | s/text |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.layer} | {r.beta} | {r.estimator} | {r.area:.3f} | "
            f"{r.acc50:.3f} | {r.vader:.3f} | {r.agree:.3f} | {r.seconds:.2f} |"
        )
    return lines


def pair(text: str) -> tuple[int, float]:
    """``"LAYER:BETA"`` as ``(layer, beta)`` (argparse's type for ``--pairs``)."""
    try:
        layer, beta = text.split(":")
        return int(layer), float(beta)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAYER:BETA, e.g. 3:10") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snippets", type=int, default=200, help="held-out snippets (200)")
    parser.add_argument("--layers", type=int, nargs="*", default=[1], help="corpus IBA (1)")
    parser.add_argument("--betas", type=float, nargs="*", default=[10.0], help="(10)")
    parser.add_argument(
        "--pairs", nargs="*", type=pair, default=[], help="more corpus-IBA settings, LAYER:BETA"
    )
    parser.add_argument(
        "--estimator-dir", type=Path, help="keep the corpus estimators here and reuse them"
    )
    parser.add_argument(
        "--preset-layers", type=int, nargs="*", default=[], help="authors' preset, sentence"
    )
    parser.add_argument(
        "--authors-layers", type=int, nargs="*", default=[], help="authors' pipeline"
    )
    parser.add_argument("--estimate-snippets", type=int, default=2000, help="training snippets")
    parser.add_argument("--replacement", choices=("mask", "unk"), default="mask")
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument(
        "--methods", nargs="*", default=list(BASELINE_METHODS), choices=BASELINE_METHODS
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (2)")
    args = parser.parse_args()

    lexicon = vader_lexicon()  # fail early if it is missing
    sys.path.insert(0, str(ROOT))  # the working tree's packages, as pytest sees them
    import torch

    import iba
    from iba.models import sentiment_head as sh
    from iba_torch.text import TextIBA, minilm_sentiment

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*truncated.*")
    warnings.filterwarnings("ignore", message=".*estimator has seen only.*")  # the pipeline
    start = time.perf_counter()
    model = minilm_sentiment()
    corpus = sh.rotten_tomatoes()
    parts = sh.split(len(corpus.texts))
    test = parts.test[: args.snippets]
    snippets = Snippets(model, [corpus.texts[i] for i in test], corpus.labels[test])
    train = [corpus.texts[i] for i in parts.train[: args.estimate_snippets]]
    accuracy = float((snippets.predicted == snippets.truth).mean())
    coverage = float(np.mean([any(w.text.lower() in lexicon for w in ws) for ws in snippets.words]))
    print(
        f"{len(test)} held-out snippets, {snippets.lengths.mean():.1f} tokens on average; the "
        f"model's accuracy on them {accuracy:.3f}; {coverage:.3f} hold a VADER word; deletion "
        f"by [{args.replacement.upper()}]; model loaded in {time.perf_counter() - start:.1f} s",
        flush=True,
    )

    rows: list[Row] = []

    def report(row: Row, maps: np.ndarray, words: list, seconds: float) -> None:
        row.seconds = seconds / len(snippets.texts)
        rows.append(score(row, snippets, maps, words, args, lexicon))
        print(format_table([row])[-1], flush=True)

    for name in args.methods:
        t0 = time.perf_counter()
        maps = run_baseline(name, snippets, args)
        seconds = time.perf_counter() - t0
        report(Row(SHORT[name]), maps, top_words(snippets, maps), seconds)

    fits = []
    configs = [(layer, beta) for layer in args.layers for beta in args.betas]
    configs += args.pairs
    for layer in dict.fromkeys(layer for layer, _ in configs):
        t0 = time.perf_counter()
        cached = None
        if args.estimator_dir is not None:
            cached = args.estimator_dir / f"minilm_layer{layer}_{len(train)}.npz"
        if cached is not None and cached.exists():
            estimator = iba.Estimator.load(cached)
            fits.append(f"layer {layer}: read from {cached}")
        else:
            estimator = TextIBA(model, layer=layer).estimate(train, progress=False)
            fits.append(f"layer {layer}: {time.perf_counter() - t0:.0f} s")
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                estimator.save(cached)
        for beta in [b for lay, b in configs if lay == layer]:
            explainer = TextIBA(model, layer=layer, estimator=estimator, beta=beta)
            t0 = time.perf_counter()
            maps, words = iba_maps(explainer, snippets)
            seconds = time.perf_counter() - t0
            report(Row("IBA", str(layer), f"{beta:g}", "corpus"), maps, words, seconds)

    for layer in args.preset_layers:
        explainer = TextIBA(model, layer=layer, config=iba.text_config(estimator="sentence"))
        t0 = time.perf_counter()
        maps, words = iba_maps(explainer, snippets)
        seconds = time.perf_counter() - t0
        report(Row("IBA, authors' preset", str(layer), "1e-05", "sentence"), maps, words, seconds)

    for layer in args.authors_layers:
        t0 = time.perf_counter()
        maps = authors_pipeline_maps(snippets, layer)
        seconds = time.perf_counter() - t0
        row = Row("IBA, authors' pipeline", str(layer), "1e-05", "sentence, layer input")
        report(row, maps, top_words(snippets, maps), seconds)

    lines = format_table(rows)
    print()
    print("\n".join(lines))
    if fits:
        print(f"corpus estimator fits ({len(train)} snippets): {', '.join(fits)}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.markdown:
        notes = [
            "",
            f"{len(test)} held-out snippets of the test split; model accuracy on them "
            f"{accuracy:.3f}; {coverage:.3f} of them hold a VADER word (the ceiling of the "
            f"VADER column); deletion by [{args.replacement.upper()}]; integrated gradients "
            f"with {args.ig_steps} steps; corpus estimators fitted on {len(train)} training "
            f"snippets ({', '.join(fits) or 'none'}).",
        ]
        args.markdown.write_text("\n".join(lines + notes) + "\n", encoding="utf-8")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
