"""Natural photos that ship inside packages (no download): scikit-image's sample data,
scikit-learn's sample images, matplotlib's sample photo and the quokka of the ``imgaug`` wheel
(read from its files, without importing imgaug)."""

from __future__ import annotations

import functools
import importlib.metadata
import json

import numpy as np

EXPLAINED = ("chelsea", "coffee", "quokka")
ESTIMATION = ("astronaut", "rocket", "china", "flower", "grace_hopper", "hubble_deep_field")


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _sklearn(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


def _matplotlib(name: str) -> np.ndarray:
    from matplotlib import cbook
    from matplotlib import pyplot as plt

    with cbook.get_sample_data(f"{name}.jpg") as file:
        return plt.imread(file, format="jpg")


def _imgaug_file(name: str):
    try:
        dist = importlib.metadata.distribution("imgaug")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the quokka photo ships in the imgaug wheel: pip install --no-deps imgaug"
        ) from None
    return dist.locate_file(f"imgaug/{name}")


def _quokka(_: str) -> np.ndarray:
    from PIL import Image

    with Image.open(_imgaug_file("quokka.jpg")) as image:
        return np.asarray(image.convert("RGB"))


SOURCES = {
    "chelsea": _skimage,
    "coffee": _skimage,
    "astronaut": _skimage,
    "rocket": _skimage,
    "hubble_deep_field": _skimage,
    "china": _sklearn,
    "flower": _sklearn,
    "grace_hopper": _matplotlib,
    "quokka": _quokka,
}


@functools.cache
def photo(name: str) -> np.ndarray:
    """The photo ``name`` as ``(H, W, 3)`` uint8 RGB."""
    if name not in SOURCES:
        raise ValueError(f"unknown photo {name!r}; photos are: {', '.join(SOURCES)}")
    image = np.asarray(SOURCES[name](name))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    image.setflags(write=False)
    return image


def quokka_box() -> tuple[int, int, int, int]:
    """The annotated bounding box of the quokka, ``(x1, y1, x2, y2)`` in pixels."""
    with open(_imgaug_file("quokka_annotations.json")) as file:
        box = json.load(file)["bounding_boxes"][0]
    return int(box["x1"]), int(box["y1"]), int(box["x2"]), int(box["y2"])


def quokka_crop_box(size: int = 224) -> tuple[int, int, int, int]:
    """The quokka's box in its :func:`center_crop` of ``size`` pixels, clipped to the crop."""
    _, (scale, top, left) = center_crop(photo("quokka"), size)
    x1, y1, x2, y2 = quokka_box()
    return (
        max(0, round(x1 * scale) - left),
        max(0, round(y1 * scale) - top),
        min(size, round(x2 * scale) - left),
        min(size, round(y2 * scale) - top),
    )


def center_crop(image: np.ndarray, size: int = 224) -> tuple[np.ndarray, tuple[float, int, int]]:
    """Resize the short side to ``size`` and crop the centre; returns the crop and
    ``(scale, top, left)`` to map boxes into it."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / min(h, w)
    resized = np.asarray(
        Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    )
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return resized[top : top + size, left : left + size], (scale, top, left)


def random_crops(names=ESTIMATION, n: int = 1000, size: int = 224, batch: int = 25, seed: int = 0):
    """Batches ``(b, size, size, 3)`` uint8 of random crops (10-100 % of the short side, any
    position) with random horizontal flips of the bundled photos ``names``, ``n`` in all."""
    yield from crops_of([photo(name) for name in names], n, size, batch, seed)


def crops_of(images, n: int = 1000, size: int = 224, batch: int = 25, seed: int = 0):
    """:func:`random_crops` of any uint8 RGB images ``(H, W, 3)`` (e.g. a folder's)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made = 0
    while made < n:
        out = np.empty((min(batch, n - made), size, size, 3), np.uint8)
        for i in range(len(out)):
            image = images[rng.integers(len(images))]
            h, w = image.shape[:2]
            side = int(min(h, w) * rng.uniform(0.1, 1.0)) or 1
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(image[top : top + side, left : left + side])
            crop = np.asarray(crop.resize((size, size), Image.BILINEAR))
            out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
        made += len(out)
        yield out


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names, in class-index order (first WordNet lemma)."""
    from importlib.resources import files

    return files("iba.demo").joinpath("imagenet_classes.txt").read_text().splitlines()
