"""The precision / deployment agreement table of issue 18 (README "Same input, same answer"), re-measured.

For each image set: how often appkit's default gives the same top-1 as appkit in float32, how often bf16
would, and how often the saved folder in a plain `transformers.pipeline` agrees with appkit float32, as it
is and with the README's two deploy lines for transparent images.

Sets: the repo's 320 clip-art JPEGs (data/clipart-products); real transparent drawings: --drawings N
openclipart PNGs (RGBA / LA / palette, from Debian's openclipart-png: `make clipart-source`) or, where that
is not installed, the 60 committed in data/transparent-drawings.

    python scripts/image_agreement.py [--drawings 200]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def deploy_lines() -> str:
    """The lines the README tells a deploying developer to add, exactly as written there."""
    block = (ROOT / "README.md").read_text().split("<!-- deploy-image-lines -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drawings", type=int, default=200)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_transparent_drawings import SOURCE, transparent_drawings
    from PIL import Image, ImageOps
    from transformers import pipeline

    import appkit

    if SOURCE.exists():
        drawings = transparent_drawings(per_mode=-(-args.drawings // 3))[: args.drawings]
        where = f"{len(drawings)} openclipart-png transparent drawings"
    else:
        drawings = sorted((ROOT / "data" / "transparent-drawings").glob("*.png"))
        where = f"{len(drawings)} committed transparent drawings (data/transparent-drawings)"
    sets = {"320 clip-art JPEGs": sorted((ROOT / "data" / "clipart-products").glob("*/*.jpg")), where: drawings}
    default = appkit.load("image-classification")
    f32 = appkit.load("image-classification", precision="float32")
    bf16 = appkit.load("image-classification", precision="bfloat16")
    folder = f32.save(Path(tempfile.mkdtemp()) / "lite0")
    pipe = pipeline("image-classification", model=str(folder))
    lines = deploy_lines()
    print(f"appkit default runs in: {default.runs_in}")
    print("| images | default vs float32 | bf16 vs float32 | pipeline vs appkit float32 | pipeline + README lines vs appkit float32 |")
    print("|---|---|---|---|---|")
    for name, files in sets.items():
        files = [str(f) for f in files]
        ref = [r["label"] for r in f32.predict(files, progress=False)]

        def agree(labels):
            return f"{sum(a == b for a, b in zip(labels, ref)) / len(ref):.1%}"

        bare = [r[0]["label"] for r in pipe(files, top_k=1)]
        deployed = []
        for path in files:
            scope = {"Image": Image, "ImageOps": ImageOps, "pipe": pipe, "path": path}
            exec(lines, scope)
            deployed.append(scope["result"][0]["label"])
        print(f"| {name} | {agree([r['label'] for r in default.predict(files, progress=False)])} | "
              f"{agree([r['label'] for r in bf16.predict(files, progress=False)])} | {agree(bare)} | {agree(deployed)} |")


if __name__ == "__main__":
    main()
