"""Image sample sets written once as PNG files under the appkit cache (the image task reads paths)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ._sources import cache_root, has_package, missing


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
