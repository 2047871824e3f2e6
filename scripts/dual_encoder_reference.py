"""Write the PyTorch dual encoder's embeddings that the Keras and Flax ports are tested against
(tests/data/dual_encoder_torch.npz): two photos, two captions (iba.models.dual_encoder).

Run from the repository root in an environment with the torch session's packages:
``python scripts/dual_encoder_reference.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from iba.demo import photos
from iba.demo.runners import preprocess
from iba_torch.dual_encoder import dual_encoder

PHOTOS = ("chelsea", "coffee")
CAPTIONS = ("a picture of a tabby cat", "a cup of espresso")
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "dual_encoder_torch.npz"


def main() -> None:
    model = dual_encoder()
    images = np.stack([photos.center_crop(photos.photo(n))[0] for n in PHOTOS])
    pixels = torch.from_numpy(np.ascontiguousarray(preprocess(images).transpose(0, 3, 1, 2)))
    tokens = model.tokenizer(list(CAPTIONS), padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixels).numpy()
        text = model.get_text_features(**tokens).numpy()
        sentence = model.sentence_embeddings(**tokens).numpy()
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        OUT,
        photos=np.array(PHOTOS),
        captions=np.array(CAPTIONS),
        image_features=image.astype(np.float32),
        text_features=text.astype(np.float32),
        sentence_embeddings=sentence.astype(np.float32),
        prompts_every_50=model.prompts.numpy()[::50].astype(np.float32),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
