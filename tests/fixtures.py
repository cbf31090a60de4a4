"""Files the tests write: awkward and broken images an image task must handle (test data, not appkit's)."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path


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

