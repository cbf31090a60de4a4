"""Build data/transparent-drawings/: real transparent clip-art PNGs in the three modes drawing programs
store transparency in (RGBA, LA, palette with a transparent entry), for the precision / deployment parity
checks (tests/integration/test_parity.py, scripts/image_agreement.py).

Source: Debian `openclipart-png` (public domain; `make clipart-source` installs it). Picks --per-mode
files per mode at random (seeded) among those that really have transparent pixels, shrinks each to at most
--size pixels (palette images with nearest-neighbour, so the palette and its transparent entry survive)
and keeps the original file name after the category.

    python scripts/build_transparent_drawings.py [--out data/transparent-drawings] [--per-mode 20] [--size 192]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

SOURCE = Path("/usr/share/openclipart/png")
MODES = ("RGBA", "LA", "P")


def transparent_drawings(source: Path = SOURCE, *, per_mode: int, seed: int = 0) -> list[Path]:
    """Up to `per_mode` openclipart PNGs per mode in MODES whose alpha really hides some pixels."""
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = 50_000_000          # a few drawings are posters of 600 megapixels: skipped
    files = sorted(source.rglob("*.png"))
    random.Random(seed).shuffle(files)
    picked: dict[str, list[Path]] = {m: [] for m in MODES}
    for path in files:
        try:
            im = Image.open(path)
            mode = im.mode
            if mode not in picked or len(picked[mode]) >= per_mode:
                continue
            if mode == "P" and "transparency" not in im.info:
                continue
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
        except (OSError, Image.DecompressionBombError):
            continue
        if 0.05 < (alpha < 255).mean() < 0.95:    # a real cut-out: background hidden, drawing kept
            picked[mode].append(path)
        if all(len(v) >= per_mode for v in picked.values()):
            break
    return [p for m in MODES for p in picked[m]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/transparent-drawings")
    ap.add_argument("--per-mode", type=int, default=20)
    ap.add_argument("--size", type=int, default=192)
    args = ap.parse_args()
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in transparent_drawings(per_mode=args.per_mode):
        im = Image.open(path)
        info = {"transparency": im.info["transparency"]} if "transparency" in im.info else {}
        im.thumbnail((args.size, args.size), Image.Resampling.NEAREST if im.mode == "P" else Image.Resampling.LANCZOS)
        name = f"{im.mode}-{path.parent.name}-{path.name}"
        im.save(out / name, **info)
    print(f"{len(list(out.glob('*.png')))} drawings -> {out}")


if __name__ == "__main__":
    main()
