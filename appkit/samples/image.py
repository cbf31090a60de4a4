"""Image sample sets: the committed clip-art products, and sets written once as PNG files under the appkit
cache (the image task reads paths).

The clip-art products come from Debian's ``openclipart-png`` (public domain); a small subset is committed
under ``data/clipart-products/`` so tests and notebooks run without the package (its builder is
scripts/build_clipart.py).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from ..errors import DataError, _msg, unknown_name
from ._sources import REPO_DATA, cache_root, has_package, missing

CLIPART_DIR = REPO_DATA / "clipart-products"


def clipart_products(split: str | None = None, *, test_fraction: float = 0.25, folder=CLIPART_DIR):
    """The committed clip-art product set as a DataFrame: ``image`` (absolute path), ``label``, ``split``.

    The split is stratified: within each label, the ``test_fraction`` of files with the lowest
    name-hash form the test split. ``split="train"`` or ``"test"`` returns only those rows.
    """
    if split not in (None, "train", "test"):
        raise unknown_name("split", split, ["train", "test"])
    folder = Path(folder)
    rows = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(label_dir.glob("*.jpg"), key=lambda p: hashlib.sha1(p.name.encode()).hexdigest())
        n_test = max(1, round(len(files) * test_fraction))
        rows += [{"image": str(p.resolve()), "label": label_dir.name, "split": "test" if i < n_test else "train"}
                 for i, p in enumerate(files)]
    if not rows:
        raise DataError(_msg("No clip-art images found", where=str(folder),
                             fix="git checkout data/clipart-products, or rebuild them with scripts/build_clipart.py"))
    df = pd.DataFrame(rows).sort_values(["label", "image"], ignore_index=True)
    if split is None:
        return df
    return df[df["split"] == split].drop(columns="split").reset_index(drop=True)


def _write_pngs(folder: Path, arrays, names: list[str], *, scale: int) -> list[str]:
    """uint8 greyscale arrays -> PNG files (enlarged `scale` times, blocky, so a person can see them)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arr, name in zip(arrays, names):
        path = folder / f"{name}.png"
        if not path.exists():
            im = Image.fromarray(arr)
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            im.save(tmp, format="PNG")
            os.replace(tmp, path)  # another kernel writing the same set never sees half a file
        paths.append(str(path))
    return paths


def lfw_faces() -> pd.DataFrame:
    """scikit-image's ``lfw_subset``: 100 face crops and 100 non-face patches, 25x25 greyscale (shown 4x).

    The faces come from Labeled Faces in the Wild (public research set); the non-faces are patches
    of the same photos. Columns: ``image`` (PNG path), ``label`` (face / not-face), ``index``.
    Needs scikit-image (`make setup`).
    """
    if not has_package("skimage"):
        raise missing("scikit-image", fix="run `make setup` (it installs appkit's dev extras)")
    import numpy as np
    from skimage.data import lfw_subset

    arr = (np.clip(lfw_subset(), 0, 1) * 255).astype("uint8")
    names = [f"{i:03d}" for i in range(len(arr))]
    paths = _write_pngs(cache_root() / "lfw-subset", arr, names, scale=4)
    labels = ["face"] * 100 + ["not-face"] * (len(arr) - 100)
    return pd.DataFrame({"image": paths, "label": labels, "index": range(len(arr))})


def digits() -> pd.DataFrame:
    """scikit-learn's ``load_digits``: 1,797 handwritten digits (8x8, 16 grey levels; UCI, CC BY 4.0).

    Columns: ``image`` (PNG path, 32x32, white ink on black as scanned), ``label`` ("0".."9"),
    ``pixels`` (the 64 original values scaled to 0..1, for models trained from scratch), ``index``.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    arr = (d.images * (255 / 16)).round().astype("uint8")
    paths = _write_pngs(cache_root() / "digits", arr, [f"{i:04d}" for i in range(len(arr))], scale=4)
    return pd.DataFrame({"image": paths, "label": [str(t) for t in d.target],
                         "pixels": list((d.data / 16.0).astype(np.float32)), "index": range(len(arr))})
