"""Decode and normalise media: audio (soundfile, soxr) — images may join this file.

Audio
-----
An audio item is a path (wav, flac, ogg, mp3 where libsndfile reads it), ``bytes`` of
such a file, an ``(array, sampling_rate)`` tuple, or a ``{"array": ..., "sampling_rate": ...}``
dict (the ``datasets`` Audio form; ``{"bytes": ..., "path": ...}`` works too). A bare
numpy array is refused: without its rate, a 44.1 kHz recording would be silently
misread as 16 kHz.

Everything becomes mono float32 at 16 kHz: channels are averaged, integer samples
scaled to [-1, 1] (8-bit unsigned included), other rates resampled with soxr
(scipy's polyphase filter where soxr is missing).

Long recordings are never decoded whole: ``open_audio`` reads only the header of a
file; ``speech_windows`` scans it in 60 s blocks (peak memory: one block, ~4 MB at
16 kHz) with the packaged silero-vad network, and returns windows of at most 30 s cut
in pauses; each window is read from the file again only when its batch runs. A
2-hour file therefore costs ~0.5 MB of speech probabilities plus one batch of
windows, not the 460 MB of its decoded samples.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, MediaError, _cap, _msg

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf"}
_SILENT_PEAK = 1e-4          # -80 dBFS: below this a recording is digital silence, not quiet speech
_BLOCK_S = 60.0              # long files are scanned in blocks of this length
_VAD_FRAME = 512             # silero-vad frame at 16 kHz (32 ms)
_VAD_CONTEXT = 64


def _audio_help() -> str:
    return "a path to a wav/flac/ogg/mp3 file, its bytes, (array, sampling_rate) or {'array': ..., 'sampling_rate': ...}"


@dataclass
class Audio:
    """One recording, opened but (for files) not yet decoded. ``name`` is what messages call it."""
    name: str
    sr: int
    frames: int
    path: str | None = None
    data: "object | None" = None      # mono float32 at 16 kHz, for in-memory items

    @property
    def duration(self) -> float:
        return self.frames / self.sr

    def read(self, start_s: float = 0.0, end_s: float | None = None):
        """Mono float32 16 kHz samples of [start_s, end_s) (the whole recording by default)."""
        import numpy as np

        end_s = self.duration if end_s is None else min(end_s, self.duration)
        if self.data is not None:
            return self.data[int(round(start_s * SAMPLE_RATE)):int(round(end_s * SAMPLE_RATE))]
        import soundfile as sf

        a, b = int(round(start_s * self.sr)), int(round(end_s * self.sr))
        try:
            x, _ = sf.read(self.path, start=a, stop=b, dtype="float32", always_2d=True)
        except Exception as exc:
            raise MediaError(_msg(f"{_cap(self.name)} could not be read past {start_s:.1f} s: {exc}",
                                  fix="check that the file is complete (re-export or re-download it)")) from None
        return resample(np.ascontiguousarray(x.mean(axis=1), dtype=np.float32), self.sr)

    def blocks(self, block_s: float = _BLOCK_S):
        """(start seconds, 16 kHz samples) for consecutive blocks: bounded memory for any length."""
        if self.data is not None:
            step = int(block_s * SAMPLE_RATE)
            for k in range(0, len(self.data), step):
                yield k / SAMPLE_RATE, self.data[k:k + step]
            return
        import numpy as np
        import soundfile as sf
        import soxr

        stream = soxr.ResampleStream(self.sr, SAMPLE_RATE, 1, dtype="float32") if self.sr != SAMPLE_RATE else None
        done = 0
        with sf.SoundFile(self.path) as fh:
            for block in fh.blocks(blocksize=int(block_s * self.sr), dtype="float32", always_2d=True):
                x = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
                last = fh.tell() >= self.frames
                if stream is not None:
                    x = stream.resample_chunk(x, last=last)
                yield done / SAMPLE_RATE, x
                done += len(x)


def resample(x, sr: int, target: int = SAMPLE_RATE):
    """Band-limited resampling (soxr HQ; scipy polyphase as a fallback)."""
    import numpy as np

    if sr == target:
        return x.astype(np.float32, copy=False)
    try:
        import soxr

        return soxr.resample(x, sr, target, quality="HQ").astype(np.float32, copy=False)
    except ImportError:  # pragma: no cover - soxr is a dependency; keep working without it
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, target)
        return resample_poly(x, target // g, sr // g).astype(np.float32)


def _to_float_mono(x, *, name: str):
    """Any numeric array (n,), (n, ch) or (ch, n) -> float32 mono in [-1, 1]."""
    import numpy as np

    x = np.asarray(x)
    if x.dtype.kind not in "iuf" or x.size == 0 or x.ndim not in (1, 2):
        what = "empty" if x.size == 0 else f"a {x.ndim}-D {x.dtype} array"
        raise MediaError(_msg(f"{_cap(name)} is {what}, not audio samples", expected="a 1-D array (or samples x channels) of numbers",
                              fix="pass (array, sampling_rate) with the recording's samples"))
    if x.dtype.kind == "u":          # 8-bit WAV style: unsigned around 128
        half = 2 ** (8 * x.dtype.itemsize - 1)
        x = (x.astype(np.float32) - half) / half
    elif x.dtype.kind == "i":
        x = x.astype(np.float32) / 2 ** (8 * x.dtype.itemsize - 1)
    else:
        x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        if x.shape[0] <= 8 < x.shape[1]:   # (channels, samples), as torchaudio returns it
            x = x.T
        x = x.mean(axis=1)
    return np.ascontiguousarray(x)


def check_samples(x, *, name: str) -> None:
    import numpy as np

    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise MediaError(_msg(f"{_cap(name)} has {bad} NaN or infinite sample(s)", expected="finite sample values",
                              fix="re-export the recording, or replace them: np.nan_to_num(samples)"))


def _check_rate(sr, *, name: str) -> int:
    given = sr
    try:
        sr = int(sr)
    except (TypeError, ValueError):
        sr = 0
    if not 1000 <= sr <= 768000:
        raise MediaError(_msg(f"{_cap(name)} has the sampling rate {given!r:.40}", expected="samples per second, e.g. 16000 or 44100",
                              fix="pass (array, sampling_rate) with the rate the audio was recorded at"))
    return sr


def open_audio(item, *, where: str) -> Audio:
    """Check one audio item and open it (files: header only). Raises MediaError naming the item."""
    import numpy as np

    if isinstance(item, dict):
        if "array" in item:
            item = (item["array"], item.get("sampling_rate"))
        elif item.get("bytes") is not None:
            item = item["bytes"]
        elif item.get("path"):
            item = item["path"]
        else:
            raise MediaError(_msg(f"{_cap(where)} is a dict without 'array', 'bytes' or 'path'", expected=_audio_help()))
    if isinstance(item, (str, os.PathLike)):
        return _open_file(Path(item), where=where)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(item), where=where)
    if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], (str, bytes)):
        sr = _check_rate(item[1], name=where)
        x = _to_float_mono(item[0], name=where)
        check_samples(x, name=where)
        x = resample(x, sr)
        return Audio(name=where, sr=SAMPLE_RATE, frames=len(x), data=x)
    if isinstance(item, np.ndarray):
        raise MediaError(_msg(f"{_cap(where)} is an array without its sampling rate",
                              expected="(array, sampling_rate), e.g. (samples, 16000)",
                              fix="pass the rate with it; soundfile.read(path) returns both"))
    raise MediaError(_msg(f"{_cap(where)} is a {type(item).__name__} ({item!r:.60}), not audio", expected=_audio_help()))


def _open_file(path: Path, *, where: str) -> Audio:
    import soundfile as sf

    name = f"{where} ({str(path)!r})"
    if not path.exists():
        raise MediaError(_msg(f"{_cap(name)}: the file does not exist", fix="check the path (it is relative to the notebook's folder)"))
    if path.is_dir():
        raise MediaError(_msg(f"{_cap(name)} is a folder, not an audio file", expected=_audio_help()))
    if path.stat().st_size == 0:
        raise MediaError(_msg(f"{_cap(name)} is an empty file (0 bytes)", fix="re-export or re-copy the recording"))
    try:
        info = sf.info(str(path))
    except Exception:
        hint = "convert it to wav or flac (e.g. `ffmpeg -i in.m4a out.wav`)" if path.suffix.lower() not in AUDIO_SUFFIXES \
            else "check that it is a complete audio file"
        raise MediaError(_msg(f"{_cap(name)} is not an audio file soundfile can read",
                              expected="wav, flac, ogg or mp3", fix=hint)) from None
    if info.frames <= 0:
        raise MediaError(_msg(f"{_cap(name)} holds no audio samples", fix="re-export the recording"))
    return Audio(name=name, sr=int(info.samplerate), frames=int(info.frames), path=str(path))


def _decode_bytes(data: bytes, *, where: str) -> Audio:
    import soundfile as sf

    if not data:
        raise MediaError(_msg(f"{_cap(where)} is empty bytes (0 bytes)", expected=_audio_help()))
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:
        raise MediaError(_msg(f"{_cap(where)} holds bytes that are not an audio file soundfile can read",
                              expected="the bytes of a wav, flac, ogg or mp3 file")) from None
    if len(x) == 0:
        raise MediaError(_msg(f"{_cap(where)} holds no audio samples", fix="re-export the recording"))
    x = x.mean(axis=1)
    check_samples(x, name=where)
    x = resample(x, int(sr))
    return Audio(name=where, sr=SAMPLE_RATE, frames=len(x), data=x)


def load_audio(item, *, where: str):
    """The whole item as mono float32 16 kHz samples, checked (finite, not silent)."""
    audio = open_audio(item, where=where)
    x = audio.read()
    check_samples(x, name=audio.name)
    check_not_silent(x, name=audio.name)
    return x


def check_not_silent(x, *, name: str) -> None:
    import numpy as np

    if len(x) == 0 or float(np.abs(x).max()) < _SILENT_PEAK:
        raise MediaError(_msg(f"{_cap(name)} is silent (every sample is below -80 dBFS)",
                              expected="a recording with sound", fix="check the microphone or the export; drop the file"))


# ------------------------------------------------------------------ images
def crop_extreme_aspect(image, processor, *, max_ratio: float = 8.0):
    """Centre-crop the long side of a very elongated image to ``max_ratio`` times its short side, for a
    processor that resizes the shortest edge and then centre-crops.

    Such a processor first blows a 100000x1 strip up to 25.6 million x 256 pixels (1.5 GB here)
    and then keeps only its centre. Cropping first keeps the same centre, with margins wide enough
    for the resampling filter, so the result is the same at a tiny fraction of the memory.
    """
    size = dict(getattr(processor, "size", None) or {})
    if not (getattr(processor, "do_center_crop", False) and size.get("shortest_edge")):
        return image
    w, h = image.size
    if max(w, h) <= max_ratio * min(w, h):
        return image
    keep = int(max_ratio * min(w, h))
    if w > h:
        left = (w - keep) // 2
        return image.crop((left, 0, left + keep, h))
    top = (h - keep) // 2
    return image.crop((0, top, w, top + keep))


# ------------------------------------------------------------------ long recordings
def _vad_weights_path() -> Path | None:
    """The packaged silero-vad weights, found by path: importing silero_vad sets torch to 1 thread."""
    from .folders import package_folder

    folder = package_folder("silero_vad")
    if folder is None:
        return None
    path = folder / "data" / "silero_vad_16k.safetensors"
    return path if path.is_file() else None


_VAD = None
_VAD_WARNED = False


class VadFallbackWarning(UserWarning):
    """silero-vad is missing and long recordings are split by loudness instead (the test suite fails on it in CI)."""


def _warn_no_vad():
    # Said once, loudly: the fallback still works, but it cuts in quiet speech and keeps noise, so transcripts
    # of long recordings get worse without any error; a half-failed set-up must not pass unnoticed.
    global _VAD_WARNED
    if not _VAD_WARNED:
        _VAD_WARNED = True
        warnings.warn("silero-vad is not installed, so long recordings are split where the audio is quiet (an "
                      "energy detector), which cuts in soft speech and keeps noise. How to fix: "
                      "pip install --no-deps silero-vad==6.2.3 (or run `make setup`).", VadFallbackWarning,
                      stacklevel=3)


def _silero():
    """silero-vad v5 (16 kHz) as a small torch module: convolutions over all frames at once, one LSTM pass."""
    global _VAD
    if _VAD is None:
        import torch
        from safetensors.torch import load_file

        path = _vad_weights_path()
        if path is None:
            _warn_no_vad()
            return None
        sd = load_file(str(path))

        class SileroVAD(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.stft = torch.nn.Conv1d(1, 258, 256, stride=128, bias=False)
                self.convs = torch.nn.ModuleList([torch.nn.Conv1d(129, 128, 3, 1, 1), torch.nn.Conv1d(128, 64, 3, 2, 1),
                                                  torch.nn.Conv1d(64, 64, 3, 2, 1), torch.nn.Conv1d(64, 128, 3, 1, 1)])
                self.lstm = torch.nn.LSTM(128, 128, batch_first=True)
                self.out = torch.nn.Conv1d(128, 1, 1)

            def forward(self, frames):  # (n, 576): 64 samples of context + one 512-sample frame, in time order
                h, _ = self.lstm(_vad_features(self, frames).unsqueeze(0))
                return torch.sigmoid(self.out(torch.relu(h[0]).unsqueeze(-1))).reshape(-1)

        m = SileroVAD()
        conv_keys = ["conv1", "conv2", "conv3", "conv4"]
        state = {"stft.weight": sd["stft_conv.weight"], "out.weight": sd["final_conv.weight"],
                 "out.bias": sd["final_conv.bias"],
                 "lstm.weight_ih_l0": sd["lstm_cell.weight_ih"], "lstm.weight_hh_l0": sd["lstm_cell.weight_hh"],
                 "lstm.bias_ih_l0": sd["lstm_cell.bias_ih"], "lstm.bias_hh_l0": sd["lstm_cell.bias_hh"]}
        for i, k in enumerate(conv_keys):
            state[f"convs.{i}.weight"], state[f"convs.{i}.bias"] = sd[f"{k}.weight"], sd[f"{k}.bias"]
        m.load_state_dict(state)
        _VAD = m.eval()
    return _VAD


def speech_probabilities(blocks):
    """Per 32 ms frame speech probability for a stream of 16 kHz blocks (silero-vad, or energy without it)."""
    import numpy as np

    vad = _silero()
    probs, carry, context, state = [], np.zeros(0, np.float32), np.zeros(_VAD_CONTEXT, np.float32), None
    for x in blocks:
        x = np.concatenate([carry, x])
        n = len(x) // _VAD_FRAME
        carry = x[n * _VAD_FRAME:]
        if n == 0:
            continue
        frames = x[:n * _VAD_FRAME].reshape(n, _VAD_FRAME)
        if vad is None:
            rms = np.sqrt((frames ** 2).mean(axis=1))
            probs.append(np.clip((20 * np.log10(rms + 1e-9) + 50) / 20, 0, 1))  # -50 dBFS -> 0, -30 dBFS -> 1
            continue
        import torch

        ctx = np.concatenate([context[None], frames[:-1, -_VAD_CONTEXT:]])
        context = frames[-1, -_VAD_CONTEXT:].copy()
        with torch.inference_mode():
            inp = torch.from_numpy(np.concatenate([ctx, frames], axis=1))
            feats = _vad_features(vad, inp)
            h, state = vad.lstm(feats.unsqueeze(0), state)
            p = torch.sigmoid(vad.out(torch.relu(h[0]).unsqueeze(-1))).reshape(-1)
        probs.append(p.numpy())
    return np.concatenate(probs) if probs else np.zeros(0, np.float32)


def _vad_features(vad, inp):
    import torch

    x = torch.nn.functional.pad(inp, (0, 64), mode="reflect").unsqueeze(1)
    x = vad.stft(x)
    x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
    for conv in vad.convs:
        x = torch.relu(conv(x))
    return x.squeeze(-1)


def scan(audio: Audio):
    """One pass over a recording: speech probabilities per frame, and checks (finite, not silent)."""
    import numpy as np

    peak = 0.0

    def checked():
        nonlocal peak
        for start, x in audio.blocks():
            check_samples(x, name=f"{audio.name} (at {start:.0f} s)")
            if len(x):
                peak = max(peak, float(np.abs(x).max()))
            yield x

    probs = speech_probabilities(checked())
    if peak < _SILENT_PEAK:
        check_not_silent(np.zeros(0), name=audio.name)
    return probs


def speech_windows(probs, duration: float, *, max_s: float = 30.0, threshold: float = 0.5,
                   min_silence_s: float = 0.3, min_speech_s: float = 0.25, pad_s: float = 0.2) -> list[tuple[float, float]]:
    """Windows (start, end) in seconds, each at most max_s long and cut in pauses, covering the speech.

    Speech regions (hysteresis on the probabilities) are padded and packed greedily into
    windows; a region longer than max_s is cut at its quietest frame in the window's last third.
    """
    import numpy as np

    fs = _VAD_FRAME / SAMPLE_RATE
    on, off = threshold, max(threshold - 0.15, 0.01)
    regions, start, quiet = [], None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= on:
                start, quiet = i, 0
        elif p < off:
            quiet += 1
            if quiet * fs >= min_silence_s:
                regions.append((start, i - quiet + 1))
                start = None
        else:
            quiet = 0
    if start is not None:
        regions.append((start, len(probs)))
    regions = [(a, b) for a, b in regions if (b - a) * fs >= min_speech_s]
    windows: list[list[int]] = []
    max_f, pad = int(max_s / fs) - 2 * int(pad_s / fs) - 1, int(pad_s / fs)
    for a, b in regions:
        while b - a > max_f:               # one long stretch of talk: cut where it is quietest
            lo = a + (2 * max_f) // 3
            cut = lo + int(np.argmin(probs[lo:a + max_f]))
            windows.append([a, cut])
            a = cut
        if windows and b - windows[-1][0] <= max_f:
            windows[-1][1] = b
        else:
            windows.append([a, b])
    out: list[tuple[float, float]] = []
    for k, (a, b) in enumerate(windows):
        s = max(0.0, (a - pad) * fs, out[-1][1] if out else 0.0)       # padding never overlaps the last window
        nxt = windows[k + 1][0] * fs if k + 1 < len(windows) else duration
        e = min(duration, (b + pad) * fs, max(b * fs, (b * fs + nxt) / 2))
        out.append((round(s, 3), round(min(e, s + max_s), 3)))
    return out


def fixed_windows(duration: float, *, max_s: float = 30.0, overlap_s: float = 5.0) -> list[tuple[float, float]]:
    """Windows of max_s seconds that overlap by overlap_s (their transcripts are stitched on the overlap)."""
    if duration <= max_s:
        return [(0.0, duration)]
    step, out, s = max_s - min(overlap_s, max_s / 6), [], 0.0
    while s < duration:
        out.append((round(s, 3), round(min(duration, s + max_s), 3)))
        if s + max_s >= duration:
            break
        s += step
    return out


# ---------------------------------------------------------------------- images
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_THUMB = 96


def image_content_key(x) -> str:
    """An image's content hash (file bytes, encoded bytes or pixels), so one picture under two names is a duplicate."""
    import hashlib

    import numpy as np
    from PIL import Image

    h = hashlib.blake2b(digest_size=12)
    if isinstance(x, dict):
        x = x.get("bytes") or x.get("path")
    if isinstance(x, (str, os.PathLike)):
        try:
            h.update(Path(x).read_bytes())
        except OSError:
            h.update(str(x).encode())
    elif isinstance(x, (bytes, bytearray)):
        h.update(bytes(x))
    elif isinstance(x, Image.Image):
        h.update(f"{x.mode}{x.size}".encode())
        h.update(x.tobytes())
    elif isinstance(x, np.ndarray):
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(repr(x).encode())
    return h.hexdigest()


def _describe(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name
    return type(item).__name__


def decode_image(item, *, where: str):
    """Path, bytes, PIL image, array or datasets image dict -> an upright RGB PIL image, or a clear error.

    Any mode becomes RGB: transparency (RGBA, LA, palette) is composited on white, 16-bit and
    float images are scaled to 8 bits, CMYK and greyscale converted. EXIF orientation is applied.
    """
    import numpy as np
    from PIL import Image, ImageOps

    if isinstance(item, dict) and ("bytes" in item or "path" in item):   # datasets' Image feature
        item = item.get("bytes") or item.get("path")
    if isinstance(item, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(item) if item.getexif() else item)
    if isinstance(item, np.ndarray):
        return _to_rgb(_from_array(item, where))
    source, size, label = _encoded_image(item, where)
    if size == 0:
        raise MediaError(_msg(f"{label} is empty (0 bytes)", fix="re-export or re-download the image, or remove it"))
    return _to_rgb(_open_image(source, label))


def _encoded_image(item, where: str) -> tuple:
    """A path or bytes -> (what Pillow opens, its size in bytes, how an error names it); anything else is refused."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        label = f"{_cap(where)} ({str(path)!r})"
        if not path.is_file():
            raise DataError(_msg(f"{label} does not exist" if not path.exists() else f"{label} is a folder, not an image file",
                                 expected="the path of an image file (JPEG, PNG, ...)",
                                 fix="check the path; relative paths start at the notebook's folder"))
        return path, path.stat().st_size, label
    if isinstance(item, (bytes, bytearray)):
        return io.BytesIO(bytes(item)), len(item), f"{_cap(where)} ({len(item)} bytes)"
    raise DataError(_msg(f"{_cap(where)} is a {type(item).__name__} ({item!r:.60}), not an image",
                         expected="a file path, bytes, a PIL image or a numpy array",
                         fix="drop missing values first (df.dropna()) or pass the image's path"))


def _open_image(source, label: str):
    """Decode an image file with Pillow, upright (EXIF orientation); every way it can fail becomes a MediaError that
    names the file: too many pixels (a decompression bomb), not an image, damaged or cut short."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS * 2 if Image.MAX_IMAGE_PIXELS else None   # Pillow's own error threshold
    try:
        with warnings.catch_warnings():
            # below Pillow's error threshold a large photo is fine (phone cameras reach 108 MP)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                pixels = im.width * im.height
                if limit and pixels > limit:
                    raise Image.DecompressionBombError(pixels)
                im.load()
                return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        n = exc.args[0] if exc.args and isinstance(exc.args[0], int) else _pixels_of(exc)
        raise MediaError(_msg(
            f"{label} is too large to decode safely" + (f": {n:,} pixels" if n else ""),
            expected=f"at most {limit:,} pixels (a guard against 'decompression bomb' files)" if limit else None,
            fix="shrink the image first, or if you trust the file raise PIL.Image.MAX_IMAGE_PIXELS")) from None
    except UnidentifiedImageError:
        head = _read_head(source)
        looks = " (it looks like a text file)" if head and _is_text(head) else ""
        raise MediaError(_msg(f"{label} is not an image Pillow can read{looks}",
                              expected="a JPEG, PNG, GIF, BMP, TIFF or WebP file",
                              fix="check the file, or remove it from the data")) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(_msg(f"{label} is damaged or cut short ({str(exc).splitlines()[0][:120]})",
                              fix="re-export or re-download the image, or remove it; errors='skip' predicts the others")) from None


def _pixels_of(exc) -> int | None:
    import re

    m = re.search(r"\((\d+) pixels\)", str(exc))
    return int(m.group(1)) if m else None


def _read_head(source) -> bytes:
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:512]
    try:
        with open(source, "rb") as f:
            return f.read(512)
    except OSError:
        return b""


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\r\n" for c in head)


def _from_array(a, where: str):
    import numpy as np
    from PIL import Image

    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] > 4:
        a = a.transpose(1, 2, 0)            # channels first (torch layout) -> last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise DataError(_msg(f"{_cap(where)} is an array of shape {a.shape}, not an image",
                             expected="(height, width), (height, width, 3) or (height, width, 4)"))
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError(_msg(f"{_cap(where)} holds NaN or infinite values", fix="clean the array first"))
        a = np.clip(a * 255 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = (a >> 8 if a.max() > 255 else a).clip(0, 255).astype(np.uint8)   # 16-bit -> 8-bit
    else:
        raise DataError(_msg(f"{_cap(where)} is an array of {a.dtype}", expected="numbers (uint8 0-255 or float 0-1)"))
    return Image.fromarray(np.ascontiguousarray(a))


def _to_rgb(im):
    import numpy as np
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):      # 16-bit / 32-bit greyscale: scale to 8 bits
        a = np.asarray(im)
        if im.mode == "F":
            a = np.clip(a * 255 if a.max() <= 1.0 else a, 0, 255)
        else:
            a = a / 257.0 if a.max() > 255 else a
        return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "RGBa", "La"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":                    # transparent parts become white, not black
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")                 # L, 1, P, CMYK, YCbCr, LAB, HSV


def thumbnail_html(x, size: int = _THUMB) -> str:
    """A small inline JPEG (base64) of an image, for the report; an unreadable one says so."""
    import base64
    import html

    try:
        image = decode_image(x, where="image").copy()
    except (DataError, MediaError):
        return f"<i>unreadable</i> {html.escape(_describe(x))}"
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    title = html.escape(str(x) if isinstance(x, (str, os.PathLike)) else _describe(x), quote=True)
    return (f'<img class="thumb" title="{title}" alt="{title}" '
            f'src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')
