"""Build data/clipart-products/: labelled clip-art pictures of shop products, from Debian's openclipart-png.

Source: Debian `openclipart-png` (public domain; `make clipart-source` installs it). Each label takes the
drawings of a few openclipart folders (PRODUCT_CATEGORIES). Transparency is flattened onto white, empty
canvas trimmed, the picture padded to a square (never cropped or stretched) and resized. Removed before
sampling: files filed under two labels, black-and-white twins of a colour drawing, near-duplicates (same
64-bit difference hash), road signs and scenery filed under vehicles, and drawings too large to decode
quickly. appkit.samples.clipart_products() reads the result.

    python scripts/build_clipart.py [--out data/clipart-products] [--per-class 40] [--size 128] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import re
import warnings
from pathlib import Path

OPENCLIPART_ROOT = Path("/usr/share/openclipart/png")

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
        from appkit.errors import DataError, _msg

        raise DataError(_msg("The openclipart images are not installed", where=str(root),
                             fix="run `make clipart-source` (it installs openclipart-png), or use "
                                 "appkit.samples.clipart_products() for the copy committed in data/"))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/clipart-products")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    counts = build_clipart_products(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"{sum(counts.values())} pictures in {len(counts)} labels -> {args.out}: {counts}")


if __name__ == "__main__":
    main()
