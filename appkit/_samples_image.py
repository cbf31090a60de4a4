"""Image sample data: a labelled clip-art product set and bad-input fixtures.

Re-exported by ``appkit.samples``. Real images come from Debian's
``openclipart-png`` (public domain); a small subset is committed under
``data/clipart-products/`` so tests and notebooks run without the package.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import struct
import warnings
import zlib
from pathlib import Path

from .errors import DataError, _msg, unknown_name

OPENCLIPART_ROOT = Path("/usr/share/openclipart/png")
CLIPART_DIR = Path(__file__).resolve().parent.parent / "data" / "clipart-products"

# Product-like shop categories -> openclipart folders (not recursive; sub-folders listed).
PRODUCT_CATEGORIES: dict[str, list[str]] = {
    "fruit": ["food/fruit", "food/vegetables"],
    "drinks": ["food/beverages", "food/beverages/alcohol"],
    "sweets": ["food/desserts"],
    "clothing": ["people/clothing", "people/clothing/hats", "people/clothing/pantyhose",
                 "people/clothing/jewelry"],
    "electronics": ["computer/hardware", "electronics", "electronics/battery", "electronics/bulb"],
    "office": ["office", "office/telephone"],
    "tools": ["tools"],
    "vehicles": ["transportation/vehicles", "transportation/vehicles/hummers"],
}
# Not products, though filed under a product folder (road signs and scenery under vehicles).
NOT_PRODUCTS = re.compile(r"sign|symbol|crossroad|curve_ahead|cycle_lane|cycle_route|parking|lighthouse|road_runner")


# ---------------------------------------------------------------- clip-art products

def _on_white(path: Path, size: int):
    """Open a clip-art PNG, flatten transparency onto white, pad to square, resize."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
    box = im.getchannel("A").getbbox()  # many drawings sit small on a large empty canvas: trim it
    if box:
        im = im.crop(box)
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, im).convert("RGB")
    side = max(im.size)  # pad rather than crop or squash: the whole product stays visible, undistorted
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _dhash(image) -> int:
    """64-bit difference hash: equal for an image and its black-and-white or rescaled copy."""
    small = image.convert("L").resize((9, 8))
    px = list(small.getdata())
    return sum(1 << i for i in range(64) if px[i // 8 * 9 + i % 8] > px[i // 8 * 9 + i % 8 + 1])


def _candidates(categories: dict[str, list[str]], root: Path, max_pixels: int) -> dict[str, list[Path]]:
    """Files per label, colour versions first; files under two labels are dropped (ambiguous truth)."""
    from PIL import Image

    files = {label: sorted({p for d in dirs for p in (root / d).glob("*.png")}) for label, dirs in categories.items()}
    seen: dict[str, set[str]] = {}
    for label, paths in files.items():
        for p in paths:
            seen.setdefault(p.name, set()).add(label)

    def small_enough(p: Path) -> bool:  # a few drawings are 169 megapixels: minutes to decode, skip them
        with warnings.catch_warnings():  # header read only: Pillow's bomb warning is noise here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                return im.width * im.height <= max_pixels

    def keep(paths: list[Path]) -> list[Path]:
        by_twin = {}  # "cone1_bw_ganson" is the black-and-white twin of "cone1_ganson": keep the colour one
        for p in sorted(paths, key=lambda p: ("_bw" in p.stem, p.name)):
            if len(seen[p.name]) == 1 and not NOT_PRODUCTS.search(p.stem) and small_enough(p):
                by_twin.setdefault(p.stem.replace("_bw", ""), p)
        return sorted(by_twin.values())

    return {label: keep(paths) for label, paths in files.items()}


def build_clipart_products(out_dir, *, categories: dict[str, list[str]] | None = None, per_class: int = 40,
                           size: int = 128, seed: int = 0, root=OPENCLIPART_ROOT,
                           max_pixels: int = 20_000_000) -> dict[str, int]:
    """Write ``out_dir/<label>/<name>.jpg`` from Debian ``openclipart-png``; return images per label.

    Near-duplicates (colour/black-and-white twins, copies in two folders) are removed
    before sampling, so no picture appears in both a train and a test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(_msg("The openclipart images are not installed", where=str(root),
                             fix="run `sudo apt-get install openclipart-png`, or use clipart_products() "
                                 "for the copy committed in data/"))
    categories = PRODUCT_CATEGORIES if categories is None else categories
    out_dir, rng, hashes, counts = Path(out_dir), random.Random(seed), set(), {}
    for label, paths in _candidates(categories, root, max_pixels).items():
        kept = {}
        for p in paths:
            image = _on_white(p, size)
            h = _dhash(image)
            if h not in hashes:
                hashes.add(h)
                kept[p] = image
        chosen = sorted(rng.sample(sorted(kept), min(per_class, len(kept))))
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        for p in chosen:
            kept[p].save(out_dir / label / f"{p.stem}.jpg", quality=85, optimize=True)
        counts[label] = len(chosen)
    return counts


def clipart_products(split: str | None = None, *, test_fraction: float = 0.25, folder=CLIPART_DIR):
    """The committed clip-art product set as a DataFrame: ``image`` (absolute path), ``label``, ``split``.

    The split is stratified: within each label, the ``test_fraction`` of files with the lowest
    name-hash form the test split. ``split="train"`` or ``"test"`` returns only those rows.
    """
    import pandas as pd

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
                             fix="rebuild them with build_clipart_products(folder)"))
    df = pd.DataFrame(rows).sort_values(["label", "image"], ignore_index=True)
    if split is None:
        return df
    return df[df["split"] == split].drop(columns="split").reset_index(drop=True)


# ---------------------------------------------------------------- bad inputs

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side white pixels: ~50 KB on disk, 400 megapixels decoded."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bad_images(out_dir) -> dict[str, Path]:
    """Write the awkward and broken image files an image task must handle; return name -> path.

    Broken: ``truncated`` JPEG, ``not_an_image`` (text named .jpg), ``empty`` (0 bytes),
    ``bomb`` (PNG claiming 20000x20000). Unusual but valid: ``cmyk``, ``grayscale``,
    ``rgba``, ``sixteen_bit`` (mode I;16), ``palette``, ``exif_rotated`` (orientation tag 6).
    """
    import numpy as np
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:64, 0:96]
    rgb = Image.fromarray(np.stack([xx * 2, yy * 4, (xx + yy) % 256], -1).astype(np.uint8))  # 96x64 gradient
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=90)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((xx * 255 // 95).astype(np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: the pixels must be rotated 90 degrees on load
    writers = {
        "truncated.jpg": lambda p: p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]),
        "not_an_image.jpg": lambda p: p.write_text("This is a text file with a .jpg name.\n"),
        "empty.jpg": lambda p: p.write_bytes(b""),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "grayscale.jpg": lambda p: rgb.convert("L").save(p, "JPEG"),
        "rgba.png": lambda p: rgba.save(p),
        "sixteen_bit.png": lambda p: Image.fromarray((yy * 1000 + xx).astype(np.uint16)).save(p),
        "palette.png": lambda p: rgb.quantize(16).save(p),
        "exif_rotated.jpg": lambda p: rgb.save(p, "JPEG", exif=exif),
        "bomb.png": lambda p: p.write_bytes(_bomb_png()),
    }
    paths = {}
    for filename, write in writers.items():
        write(out / filename)
        paths[filename.rsplit(".", 1)[0]] = out / filename
    return paths


__all__ = ["PRODUCT_CATEGORIES", "bad_images", "build_clipart_products", "clipart_products"]
