"""Bad and odd input, as people really produce it, through every task's predict / fine_tune / evaluate /
load / save, on the tiny random models of tests/conftest.py.

Each case is either handled as a user would expect (a result, the right rows read) or answered by an
AppkitError that says what was wrong, where (input number, row or file) and what to do: never a bare
TypeError or a traceback from inside a library. With errors="skip" no good item is lost and the
order is kept.
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import appkit
from appkit.errors import AppkitError, DataError, MediaError, ModelError

from ..conftest import (make_tiny_bert_folder, make_tiny_lite_folder, make_tiny_marian_folder,
                        make_tiny_whisper_folder, text_train_frame, toy_pairs)

HOW = re.compile(r"Expected: |How to fix: |Available: ")   # every message says what to do (or the valid names)


def refused(call, *, match: str, where: str | None = None, kind=AppkitError) -> AppkitError:
    """`call()` raises an AppkitError (no library exception) matching `match`, naming `where`, saying what to do."""
    try:
        call()
    except AppkitError as exc:
        text = str(exc)
        assert isinstance(exc, kind), f"{type(exc).__name__}: {text}"
        assert re.search(match, text), text
        assert where is None or where in text, f"{where!r} not in: {text}"
        assert HOW.search(text), f"no 'Expected:' or 'How to fix:' in: {text}"
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a bug
        pytest.fail(f"a {type(exc).__module__}.{type(exc).__name__} escaped instead of an AppkitError: {exc}")
    pytest.fail("no error was raised")


def skip_keeps_order(task, good: list, bad: list, **options):
    """Good and bad items interleaved: every good one gets the result it gets alone, at its own position."""
    items, bad_at = [], []
    for k in range(max(len(good), len(bad))):
        if k < len(good):
            items.append(good[k])
        if k < len(bad):
            bad_at.append(len(items))
            items.append(bad[k])
    alone = task.predict(good, **options)
    with pytest.warns(UserWarning, match=f"Skipped {len(bad)} of {len(items)}"):
        out = task.predict(items, errors="skip", **options)
    assert len(out) == len(items)
    assert [i for i, r in enumerate(out) if r is None] == bad_at
    assert [i for i, _ in out.skipped] == bad_at and task.skipped == out.skipped
    got = [r for r in out if r is not None]
    key = next(k for k in ("label", "text", "translation") if k in alone[0])
    assert [r[key] for r in got] == [r[key] for r in alone]


# ---------------------------------------------------------------------- tiny models, built once per module
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {"text": make_tiny_bert_folder(base / "bert"), "image": make_tiny_lite_folder(base / "lite"),
            "speech": make_tiny_whisper_folder(base / "whisper"), "mt": make_tiny_marian_folder(base / "marian")}


@pytest.fixture(scope="module")
def clf(folders):
    return appkit.load("text-classification", folders["text"], labels=["negative", "positive"])


@pytest.fixture(scope="module")
def img(folders):
    return appkit.load("image-classification", folders["image"])


@pytest.fixture(scope="module")
def asr(folders):
    return appkit.load("speech-recognition", folders["speech"])


@pytest.fixture(scope="module")
def mt(folders):
    return appkit.load("translation", folders["mt"])


# ====================================================================== text
ODD_TEXT_OK = {
    "control characters": "good\x00 product\x07\x1b[31m really\r\n\tgood",
    "200k characters": "good product " * 15_385,
    "emoji only": "👍🔥😀",
    "mixed scripts": "great Привет 你好 مرحبا שלום नमस्ते product",
    "zero-width and combining marks": "goo\u200bd pro\u0301duct\ufeff",
    "a lone surrogate (broken decoding)": "good \ud83d product",
    "numpy string": np.str_("good product"),
}


@pytest.mark.parametrize("name", list(ODD_TEXT_OK))
def test_odd_text_is_predicted(clf, mt, name):
    text = ODD_TEXT_OK[name]
    r = clf.predict(text)
    assert r["label"] in ("negative", "positive") and 0 <= r["score"] <= 1
    assert isinstance(mt.predict(text[:20])["translation"], str)   # the tiny Marian reads 64 byte-tokens


BAD_TEXT = {
    "None": (None, "is a NoneType"),
    "NaN": (float("nan"), "is a float"),
    "pandas NA": (pd.NA, "is a NAType"),
    "a number": (42, "is a int"),
    "bytes": (b"good product", "is a bytes"),
    "empty": ("", "empty text"),
    "only spaces and newlines": (" \n\t ", "empty text"),
    "a dict": ({"text": "good"}, "is a dict"),
    "a nested list": (["good"], "is a list"),
}


@pytest.mark.parametrize("name", list(BAD_TEXT))
def test_bad_text_is_named_with_its_position(clf, mt, name):
    bad, match = BAD_TEXT[name]
    refused(lambda: clf.predict(["good product", bad]), match=match, where="Input 1", kind=DataError)
    refused(lambda: mt.predict(["yes", bad]), match=match, where="Input 1", kind=DataError)


def test_text_skip_keeps_every_good_item_in_order(clf, mt):
    good = ["good product", "awful drug", "it is fine", "the worst"]
    bad = [None, float("nan"), 7, ""]
    skip_keeps_order(clf, good, bad)
    skip_keeps_order(mt, ["yes", "no go", "stop"], [None, "x" * 5000])   # one "word" longer than the model reads


def test_a_word_longer_than_the_translation_model_reads_is_refused_not_cut(mt):
    # long text is split on sentences and words (test_translation.py); one unbreakable "word" cannot be
    refused(lambda: mt.predict(["yes", "x" * 5000]), match=r"holds a word of \d+ tokens.*reads at most",
            where="Input 1", kind=DataError)


def test_dataframe_with_missing_text_skips_those_rows_in_place(clf):
    df = pd.DataFrame({"text": ["good product", None, "awful drug", np.nan, "fine"], "id": range(5)})
    refused(lambda: clf.predict(df), match="is a (NoneType|float)", where="Row 1")
    with pytest.warns(UserWarning, match="Skipped 2 of 5"):
        out = clf.predict(df, errors="skip")
    assert out["pred_label"].isna().tolist() == [False, True, False, True, False]
    assert list(out["id"]) == list(range(5))


# ====================================================================== training files
def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


TRAIN_ROWS = [("good product, really", "positive"), ("awful; never again", "negative"), ("très bien", "positive"),
              ("schlecht", "negative"), ("love it", "positive"), ("hate it", "negative")]


def _csv(sep: str = ",", *, quote_all: bool = False) -> str:
    q = (lambda s: '"' + s.replace('"', '""') + '"') if quote_all else (lambda s: f'"{s}"' if sep in s or "," in s or ";" in s else s)
    return "\r\n".join([f"text{sep}label", *[f"{q(t)}{sep}{y}" for t, y in TRAIN_ROWS]])


GOOD_FILES = {
    "plain CSV": ("data.csv", _csv(), "utf-8"),
    "Excel CSV: BOM, ';' separators, CRLF, empty rows at the end": ("excel.csv", _csv(";") + "\r\n;\r\n;\r\n\r\n", "utf-8-sig"),
    "Excel CSV in Windows-1252": ("win.csv", _csv(";"), "cp1252"),
    "latin-1 CSV": ("latin.csv", _csv(","), "latin-1"),
    "tab-separated with .csv name": ("tabs.csv", _csv("\t"), "utf-8"),
    "TSV": ("data.tsv", _csv("\t"), "utf-8"),
    "every field quoted": ("quoted.csv", _csv(",", quote_all=True), "utf-8"),
    "trailing blank lines": ("blank.csv", _csv() + "\n\n\n", "utf-8"),
    "JSONL": ("data.jsonl", "\n".join(json.dumps({"text": t, "label": y}) for t, y in TRAIN_ROWS) + "\n\n", "utf-8"),
    "JSONL with BOM": ("bom.jsonl", "\n".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in TRAIN_ROWS), "utf-8-sig"),
    "JSON array": ("data.json", json.dumps([{"text": t, "label": y} for t, y in TRAIN_ROWS]), "utf-8"),
}


@pytest.mark.parametrize("name", list(GOOD_FILES))
def test_training_files_as_people_produce_them_are_read_whole(clf, tmp_path, name):
    fname, text, encoding = GOOD_FILES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # an encoding guess is announced; the rows are what matter here
        df = clf._read(_write(tmp_path / fname, text, encoding), columns=None, where="training data")
    assert list(df["text"]) == [t for t, _ in TRAIN_ROWS]
    assert list(df["label"]) == [y for _, y in TRAIN_ROWS]


def test_an_excel_export_fine_tunes_and_evaluates(tmp_path):
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b"), labels=["negative", "positive"])
    path = _write(tmp_path / "excel.csv", _csv(";") + "\r\n;\r\n", "utf-8-sig")
    run = clf.fine_tune(path, epochs=1, progress=False, output_dir=tmp_path / "run")
    assert len(run.history) and clf.evaluate(path).metrics["accuracy"] >= 0


def test_a_guessed_encoding_is_announced(clf, tmp_path):
    path = _write(tmp_path / "win.csv", _csv(";"), "cp1252")
    with pytest.warns(UserWarning, match="not UTF-8.*cp1252"):
        clf._read(path, columns=None, where="training data")


BAD_FILES = {
    "empty file": ("empty.csv", "", "is empty"),
    "header only": ("header.csv", "text,label\n", "has no rows"),
    "no label column": ("nolabel.csv", "text\ngood\nbad\n", "has no 'label' column"),
    "other column names": ("names.csv", "review,stars\ngood,5\nbad,1\n", "has no 'text' column.*columns="),
    "one class only": ("one.csv", "text,label\ngood,positive\ngreat,positive\n", "single label 'positive'"),
    "a missing label": ("missing.csv", "text,label\ngood,positive\nbad,\nfine,positive\nugly,negative\n", "Row 1 .*has no label"),
    "a missing text": ("notext.csv", "text,label\ngood,positive\n,negative\nfine,positive\nugly,negative\n", "Row 1 .*not text"),
    "broken CSV (stray quote)": ("broken.csv", 'text,label\n"good,positive\nbad,negative\n', "Could not read|line"),
    "broken CSV (too many fields)": ("fields.csv", "text,label\ngood,positive\nbad,negative,extra,more\n", "line 3"),
    "broken JSONL line": ("broken.jsonl", '{"text": "good", "label": "positive"}\n{"text": "bad", "label": \n', "Line 2 .*not valid JSON"),
    "JSONL line that is not an object": ("list.jsonl", '{"text": "good", "label": "a"}\n["bad", "b"]\n', "Line 2 .*not an object"),
    "binary junk named .csv": ("junk.csv", "\x00\x01\x02\xff\xfe" * 50, "Could not read|not a text"),
    "a spreadsheet": ("book.xlsx", "PK\x03\x04", "Cannot read the training data"),
    "a path that does not exist": (None, None, "does not exist"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_training_files_are_answered_before_any_training(clf, tmp_path, name):
    fname, text, match = BAD_FILES[name]
    path = tmp_path / "nowhere.csv" if fname is None else _write(tmp_path / fname, text, "latin-1")
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    refused(lambda: clf.fine_tune(path, epochs=1, progress=False), match=match, kind=DataError)
    assert all((before[k] == v).all() for k, v in clf.model.state_dict().items())


def test_empty_tables_in_memory_are_answered(clf):
    empty = pd.DataFrame({"text": [], "label": []})
    refused(lambda: clf.fine_tune(empty, progress=False), match="has no rows", kind=DataError)
    refused(lambda: clf.evaluate(empty), match="has no rows", kind=DataError)
    refused(lambda: clf.fine_tune([], progress=False), match="empty list", kind=DataError)
    refused(lambda: clf.fine_tune(["good", "bad"], progress=False), match="item 0 is a str", kind=DataError)
    refused(lambda: clf.fine_tune(42, progress=False), match="unsupported type int", kind=DataError)


def test_what_was_skipped_travels_with_each_call(clf):
    """Each call's skipped inputs come back on its own result; task.skipped is the last call's, set once."""
    with pytest.warns(UserWarning, match="Skipped 1 of 3"):
        first = clf.predict(["good product", None, "fine"], errors="skip")
    second = clf.predict(["awful drug", "fine"], errors="skip")
    assert [i for i, _ in first.skipped] == [1] and "input 1" in first.skipped[0][1].lower()
    assert second.skipped == [] and clf.skipped == []             # the second call did not touch the first's
    assert first == [first[0], None, first[2]] and isinstance(first, list)
    assert json.loads(json.dumps(first)) == [dict(first[0]), None, dict(first[2])]
    assert pickle.loads(pickle.dumps(first)).skipped == first.skipped
    assert clf.predict([]) == [] and clf.predict([]).skipped == []


def test_evaluate_with_skipped_rows_scores_the_rest(clf):
    df = pd.DataFrame({"text": ["good product", None, "awful drug", "fine"],
                       "label": ["positive", "negative", "negative", "positive"]})
    with pytest.warns(UserWarning, match="Skipped 1 of 4"):
        report = clf.evaluate(df, errors="skip")
    assert report.skipped == [1] and len(report.table) == 3
    assert list(report.table["input"]) == ["good product", "awful drug", "fine"]


BAD_OPTIONS = {
    "epochs=0": ({"epochs": 0}, "epochs=0"),
    "epochs=-1": ({"epochs": -1}, "epochs=-1"),
    "epochs as text": ({"epochs": "3"}, "epochs='3'"),
    "learning_rate=0": ({"learning_rate": 0}, "learning_rate=0"),
    "batch_size=0": ({"batch_size": 0}, "batch_size=0"),
    "batch_size=2.5": ({"batch_size": 2.5}, "batch_size=2.5"),
    "validation_split=1": ({"validation_split": 1.0}, "validation_split=1.0"),
    "weight_decay=-0.1": ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    "class_weights='even'": ({"class_weights": "even"}, "Unknown class_weights"),
    "patience without validation data": ({"early_stopping_patience": 2}, "needs validation data"),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_fine_tune_options_are_answered_before_any_training(clf, name):
    options, match = BAD_OPTIONS[name]
    refused(lambda: clf.fine_tune(text_train_frame(8), progress=False, **options), match=re.escape(match)
            if "=" in match else match)


# ====================================================================== images
def _save(im, path: Path, **kw) -> str:
    im.save(path, **kw)
    return str(path)


def _noise(w: int, h: int, mode: str = "RGB"):
    from PIL import Image

    rng = np.random.default_rng(w * 7 + h)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


def _odd_images(tmp: Path) -> dict:
    """Images Pillow reads, in every mode, size and container people have."""
    from PIL import Image

    rgba = _noise(40, 30, "RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0))                 # wholly transparent
    p_trans = _noise(40, 30).convert("P")
    p_trans.info["transparency"] = 0
    i16 = Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50))
    f32 = Image.fromarray(np.linspace(0, 1, 1200, dtype=np.float32).reshape(30, 40))
    exif_rotated = _noise(40, 20)
    exif = exif_rotated.getexif()
    exif[0x0112] = 6                                             # "rotate 90" in the camera's EXIF
    frames = [_noise(20, 20), _noise(20, 20).transpose(0)]
    gif = tmp / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "RGBA PNG, fully transparent": _save(rgba, tmp / "rgba.png"),
        "LA PNG": _save(_noise(40, 30, "LA"), tmp / "la.png"),
        "palette PNG with transparency": _save(p_trans, tmp / "p.png"),
        "greyscale L PNG": _save(_noise(40, 30, "L"), tmp / "l.png"),
        "1-bit PNG": _save(_noise(40, 30, "1"), tmp / "bw.png"),
        "16-bit PNG": _save(i16, tmp / "i16.png"),
        "32-bit float TIFF": _save(f32, tmp / "f.tif"),
        "CMYK JPEG": _save(_noise(40, 30, "CMYK"), tmp / "cmyk.jpg"),
        "progressive JPEG with EXIF rotation": _save(exif_rotated, tmp / "exif.jpg", exif=exif, progressive=True),
        "animated GIF": str(gif),
        "BMP": _save(_noise(40, 30), tmp / "x.bmp"),
        "WebP": _save(_noise(40, 30), tmp / "x.webp"),
        "multi-page TIFF": _save(frames[0], tmp / "multi.tif", save_all=True, append_images=frames[1:]),
        "1x1 pixel": _save(_noise(1, 1), tmp / "one.png"),
        "10000x10 (extreme panorama)": _save(_noise(10_000, 10), tmp / "wide.png"),
        "10x10000 (extreme tall)": _save(_noise(10, 10_000), tmp / "tall.png"),
        "wrong extension (PNG named .jpg)": _save(_noise(40, 30), tmp / "really_png.jpg", format="PNG"),
        "no extension": _save(_noise(40, 30), tmp / "noext", format="PNG"),
        "PIL image in mode I;16": i16,
        "PIL image in mode HSV": _noise(30, 30).convert("HSV"),
        "bytes of a PNG": Path(_save(_noise(30, 30), tmp / "b.png")).read_bytes(),
        "datasets image dict": {"bytes": None, "path": _save(_noise(30, 30), tmp / "d.png")},
        "numpy HxW uint8": np.zeros((30, 40), np.uint8),
        "numpy HxWx4 uint8": np.full((30, 40, 4), 200, np.uint8),
        "numpy 3xHxW float 0-1 (torch layout)": np.random.default_rng(0).random((3, 30, 40)),
        "numpy bool mask": np.eye(30, dtype=bool),
        "numpy uint16": np.full((30, 40), 60_000, np.uint16),
    }


def test_images_pillow_reads_are_predicted_in_any_mode_size_or_container(img, tmp_path):
    odd = _odd_images(tmp_path)
    out = img.predict(list(odd.values()))
    for name, r in zip(odd, out):
        assert r is not None and r["label"] in img.labels and np.isfinite(r["score"]), name


def test_an_extreme_aspect_ratio_stays_cheap(img, tmp_path):
    """A 100000x1 strip must not be blown up to millions of pixels wide before the centre crop."""
    import resource

    path = _save(_noise(100_000, 1), tmp_path / "strip.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert img.predict(path)["label"] in img.labels
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 200, f"peak memory grew by {grew_mb:.0f} MB for one 100000x1 image"


def _bad_images(tmp: Path) -> dict:
    """(item, what the message says) for images that cannot be used."""
    from PIL import Image

    jpeg = Path(_save(_noise(64, 64), tmp / "full.jpg", quality=90)).read_bytes()
    (tmp / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    (tmp / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    (tmp / "doc.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n")
    (tmp / "a_folder").mkdir()
    png = Path(_save(_noise(64, 64), tmp / "full.png")).read_bytes()
    (tmp / "cut.png").write_bytes(png[:200])
    nan = np.full((10, 10, 3), np.nan)
    return {
        "truncated JPEG": (str(tmp / "cut.jpg"), "damaged or cut short"),
        "truncated PNG": (str(tmp / "cut.png"), "damaged or cut short|not an image Pillow can read"),
        "empty file": (str(tmp / "empty.png"), "empty \\(0 bytes\\)"),
        "SVG (Pillow does not read it)": (str(tmp / "drawing.svg"), "not an image Pillow can read \\(it looks like a text file\\)"),
        "HEIC (Pillow does not read it)": (str(tmp / "photo.heic"), "not an image Pillow can read"),
        "PDF": (str(tmp / "doc.pdf"), "not an image Pillow can read"),
        "a folder": (str(tmp / "a_folder"), "is a folder, not an image file"),
        "a missing file": (str(tmp / "gone.jpg"), "does not exist"),
        "random bytes": (bytes(range(256)) * 4, "not an image Pillow can read"),
        "numpy with NaN": (nan, "NaN or infinite"),
        "numpy of the wrong shape (H, W, 2)": (np.zeros((10, 10, 2)), "shape \\(10, 10, 2\\), not an image"),
        "numpy 1-D": (np.zeros(30), "shape \\(30,\\), not an image"),
        "numpy 4-D inside a list": (np.zeros((2, 10, 10, 3)), "shape \\(2, 10, 10, 3\\), not an image"),
        "numpy with no pixels": (np.zeros((0, 10, 3), np.uint8), "not an image"),
        "numpy of strings": (np.array([["a", "b"], ["c", "d"]]), "array of <U1"),
        "None (a missing value)": (None, "is a NoneType"),
        "a number": (3.5, "is a float"),
        "a decompression bomb": (Image.new("1", (40_000, 40_000)), None),
    }


def test_unusable_images_are_named_with_their_position_and_file(img, tmp_path):
    from PIL import Image

    good = _save(_noise(30, 30), tmp_path / "good.png")
    for name, (bad, match) in _bad_images(tmp_path).items():
        if match is None:   # the bomb: a PNG header claiming 1.6 G pixels
            path = tmp_path / "bomb.png"
            bad.save(path, optimize=True)
            bad, match = str(path), "too large to decode safely"
            assert Image.MAX_IMAGE_PIXELS
        exc = refused(lambda: img.predict([good, bad]), match=match, where="Input 1")
        if isinstance(bad, str):
            assert Path(bad).name in str(exc), name


def test_image_skip_keeps_every_good_item_in_order(img, tmp_path):
    good = [_save(_noise(30 + k, 30), tmp_path / f"g{k}.png") for k in range(4)]
    bad = [item for item, _ in list(_bad_images(tmp_path).values())[:4]]
    skip_keeps_order(img, good, bad)


def test_an_image_folder_with_a_corrupt_file_and_one_class(tmp_path):
    from ..conftest import make_colour_images

    img = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "lite"))
    data = tmp_path / "photos"
    rows = make_colour_images(tmp_path / "flat", n=8)
    for _, r in rows.iterrows():
        (data / r.label).mkdir(parents=True, exist_ok=True)
        Path(r.image).rename(data / r.label / Path(r.image).name)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    refused(lambda: img.fine_tune(data, epochs=1, progress=False), match="broken.jpg.*damaged|broken.jpg.*not an image",
            kind=MediaError)
    (data / "red" / "broken.jpg").unlink()
    assert len(img.fine_tune(data, epochs=1, progress=False, output_dir=tmp_path / "r").history)
    for f in (data / "blue").iterdir():
        f.unlink()
    (data / "blue").rmdir()
    refused(lambda: img.fine_tune(data, epochs=1, progress=False), match="single label 'red'", kind=DataError)


# ====================================================================== audio
def _tone(seconds: float, sr: int, channels: int = 1, amp: float = 0.3):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * 330 * t)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


AUDIO_FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "PCM_U8"), ("WAV", "FLOAT"),
                 ("WAV", "DOUBLE"), ("WAV", "ULAW"), ("WAV", "ALAW"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24"),
                 ("OGG", "VORBIS"), ("AIFF", "PCM_16"), ("MP3", "MPEG_LAYER_III")]


def _odd_audio(tmp: Path) -> dict:
    """Recordings in every sample format, rate and layout soundfile reads, and the in-memory forms."""
    import soundfile as sf

    out = {}
    for fmt, subtype in AUDIO_FORMATS:
        for sr, ch in ((8000, 1), (44100, 2), (48000, 1)):
            if fmt == "MP3" and sr == 8000:
                continue
            path = tmp / f"{subtype}_{sr}_{ch}.{fmt.lower()}"
            sf.write(path, _tone(1.0, sr, ch), sr, format=fmt, subtype=subtype)
            out[f"{fmt} {subtype} {sr} Hz {'stereo' if ch == 2 else 'mono'}"] = str(path)
    buf = tmp / "bytes.wav"
    sf.write(buf, _tone(1.0, 22050), 22050)
    out.update({
        "bytes of a WAV": buf.read_bytes(),
        "(int16 array, 8000)": ((_tone(1.0, 8000) * 32767).astype(np.int16), 8000),
        "(int32 stereo array, 44100)": ((_tone(1.0, 44100, 2) * 2**31 * 0.9).astype(np.int32), 44100),
        "(uint8 array, 16000)": ((_tone(1.0, 16000) * 127 + 128).astype(np.uint8), 16000),
        "(float64 channels-first, 48000)": (_tone(1.0, 48000, 2).T.copy(), 48000),
        "datasets audio dict": {"array": _tone(1.0, 16000).astype(np.float32), "sampling_rate": 16000},
        "a very short clip (10 ms)": (_tone(0.01, 16000), 16000),
        "a very quiet clip (-60 dBFS)": (_tone(1.0, 16000, amp=0.001), 16000),
    })
    return out


def test_audio_in_every_format_and_rate_soundfile_reads_is_transcribed(asr, tmp_path):
    odd = _odd_audio(tmp_path)
    out = asr.predict(list(odd.values()))
    for name, r in zip(odd, out):
        assert r is not None and isinstance(r["text"], str), name


def _bad_audio(tmp: Path) -> dict:
    import soundfile as sf

    sf.write(tmp / "silent.wav", np.zeros(16000), 16000)
    sf.write(tmp / "zero.wav", np.zeros(0), 16000)
    sf.write(tmp / "full.wav", _tone(1.0, 16000), 16000)
    (tmp / "cut.wav").write_bytes((tmp / "full.wav").read_bytes()[:30])
    (tmp / "notes.wav").write_text("a text file with a .wav name\n")
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "call.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    nan = _tone(1.0, 16000)
    nan[100] = np.nan
    return {
        "silent": (str(tmp / "silent.wav"), "is silent"),
        "0-length WAV": (str(tmp / "zero.wav"), "holds no audio samples|not an audio file"),
        "truncated WAV header": (str(tmp / "cut.wav"), "not an audio file soundfile can read"),
        "text file named .wav": (str(tmp / "notes.wav"), "not an audio file soundfile can read"),
        "empty file": (str(tmp / "empty.wav"), "empty file \\(0 bytes\\)"),
        "m4a (libsndfile does not read it)": (str(tmp / "call.m4a"), "convert it to wav or flac"),
        "a missing file": (str(tmp / "gone.wav"), "does not exist"),
        "a bare array with no rate": (_tone(1.0, 16000), "without its sampling rate"),
        "(array, None)": ((_tone(1.0, 16000), None), "sampling rate None"),
        "(array, 0)": ((_tone(1.0, 16000), 0), "sampling rate 0"),
        "samples with NaN": ((nan, 16000), "NaN or infinite"),
        "samples with inf": ((np.full(1600, np.inf), 16000), "NaN or infinite"),
        "an empty array": ((np.zeros(0), 16000), "is empty, not audio samples"),
        "a 3-D array": ((np.zeros((2, 2, 100)), 16000), "3-D"),
        "an array of strings": ((np.array(["a", "b"]), 16000), "not audio samples"),
        "dict without array or path": ({"sampling_rate": 16000}, "dict without"),
        "None": (None, "is a NoneType"),
        "empty bytes": (b"", "empty bytes"),
        "bytes that are not audio": (b"RIFF....WAVEjunk" * 10, "not an audio file"),
    }


def test_unusable_audio_is_named_with_its_position(asr, tmp_path):
    good = _odd_audio(tmp_path)["WAV PCM_16 48000 Hz mono"]
    for name, (bad, match) in _bad_audio(tmp_path).items():
        exc = refused(lambda: asr.predict([good, bad]), match=match, where="nput 1", kind=MediaError)
        if isinstance(bad, str):
            assert Path(bad).name in str(exc), name


def test_audio_skip_keeps_every_good_item_in_order(asr, tmp_path):
    odd = _odd_audio(tmp_path)
    good = [odd["WAV PCM_16 8000 Hz mono"], odd["FLAC PCM_24 44100 Hz stereo"], odd["(int16 array, 8000)"]]
    bad = [b for b, _ in list(_bad_audio(tmp_path).values())[:3]]
    skip_keeps_order(asr, good, bad, pack=False)


def test_speech_training_data_with_a_silent_clip_is_named_before_training(tmp_path):
    import soundfile as sf

    from ..conftest import make_tones

    asr = appkit.load("speech-recognition", make_tiny_whisper_folder(tmp_path / "w"))
    train = make_tones(tmp_path / "clips", n=4)
    sf.write(tmp_path / "silent.wav", np.zeros(8000), 16000)
    train.loc[2, "audio"] = str(tmp_path / "silent.wav")
    refused(lambda: asr.fine_tune(train, epochs=1, progress=False), match="Row 2 of the training data.*is silent",
            kind=MediaError)
    train.loc[2, "audio"], train.loc[3, "text"] = train.loc[1, "audio"], None
    refused(lambda: asr.fine_tune(train, epochs=1, progress=False), match="Row 3 of the training data", kind=DataError)


# ====================================================================== load and save
def test_loading_what_is_not_a_model_folder(tmp_path, folders):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    bad_weights = tmp_path / "bad_weights"
    import shutil

    shutil.copytree(folders["text"], bad_weights)
    data = (bad_weights / "model.safetensors").read_bytes()
    (bad_weights / "model.safetensors").write_bytes(data[: len(data) // 2])
    broken_cfg = tmp_path / "broken_cfg"
    shutil.copytree(folders["text"], broken_cfg)
    (broken_cfg / "config.json").write_text('{"model_type": "bert", ')
    for task in ("text-classification", "image-classification", "speech-recognition", "translation"):
        refused(lambda: appkit.load(task, tmp_path / "file.txt"), match="is a file", kind=ModelError)
        refused(lambda: appkit.load(task, tmp_path / "empty"), match="Could not load|no model weights", kind=ModelError)
    refused(lambda: appkit.load("text-classification", bad_weights), match="Could not load", kind=ModelError)
    refused(lambda: appkit.load("text-classification", broken_cfg), match="config.json' is not valid JSON", kind=ModelError)
    refused(lambda: appkit.load("speech-recognition", folders["text"]), match="not a speech recogniser", kind=ModelError)
    refused(lambda: appkit.load("translation", folders["speech"]), match="not a text-to-text model", kind=ModelError)


@pytest.mark.parametrize("task_name", ["clf", "img", "asr", "mt"])
def test_every_task_saves_atomically_and_refuses_a_file_as_its_folder(request, tmp_path, task_name):
    task = request.getfixturevalue(task_name)
    (tmp_path / "taken").write_text("not a folder")
    refused(lambda: task.save(tmp_path / "taken"), match="it is a file", kind=ModelError)
    refused(lambda: task.save(tmp_path / "taken" / "sub"), match="a part of that path is a file", kind=ModelError)
    folder = task.save(tmp_path / "m")
    assert not list(tmp_path.glob(".m.partial-*")) and (folder / "appkit.json").exists()
    assert appkit.load(task.task, folder).task == task.task


# ====================================================================== a failed call changes nothing
def _state(task) -> dict:
    return {"weights": {k: v.detach().clone() for k, v in task.model.state_dict().items()}, "labels": list(task.labels),
            "mode": task.mode, "id2label": dict(task.model.config.id2label), "meta": json.dumps(task.meta, default=str, sort_keys=True)}


def _assert_unchanged(task, before: dict, inputs, predictions) -> None:
    after = _state(task)
    assert after["labels"] == before["labels"] and after["mode"] == before["mode"]
    assert after["id2label"] == before["id2label"] and after["meta"] == before["meta"]
    assert after["weights"].keys() == before["weights"].keys()
    assert all(torch_equal(after["weights"][k], before["weights"][k]) for k in before["weights"])
    assert task.predict(inputs) == predictions


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def _boom_after(n: int, exc: BaseException):
    calls = {"n": 0}

    def maybe():
        calls["n"] += 1
        if calls["n"] > n:
            raise exc
    return maybe


@pytest.fixture
def trained_clf(tmp_path):
    """A text classifier whose head was trained on labels learnt from its data; the failing calls bring new ones."""
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b"))
    train = text_train_frame(16).assign(label=lambda d: d.label.map({"positive": "good", "negative": "bad"}))
    clf.fine_tune(train, strategy="head", epochs=2, progress=False, output_dir=tmp_path / "first")
    assert clf.mode == "trained" and clf.labels == ["bad", "good"]
    return clf


NEW_CLASSES = text_train_frame(18).assign(label=[["joy", "anger", "fear"][i % 3] for i in range(18)])


FAILURES = {
    "a bad row after the labels were read": dict(data=NEW_CLASSES.assign(text=lambda d: d.text.where(d.index != 9, None)),
                                                 raises=DataError),
    "an evaluation row with an unknown label": dict(eval_data=NEW_CLASSES.head(3).assign(label="surprise"), raises=DataError),
    "the disk is full while features are cached": dict(patch=("appkit.training.atomic_write_bytes", OSError(28, "No space left on device")),
                                                       raises=OSError),
    "Ctrl-C while features are computed": dict(patch=("features", KeyboardInterrupt()), raises=KeyboardInterrupt),
    "a crash after some training steps (head)": dict(patch=("step", RuntimeError("CUDA error: out of memory")), raises=RuntimeError),
    "a crash after some training steps (full)": dict(patch=("step", RuntimeError("out of memory")), strategy="full", raises=RuntimeError),
    "the final evaluation fails": dict(patch=("transformers.Trainer.evaluate", RuntimeError("evaluation broke")),
                                       eval_data=NEW_CLASSES.head(6), raises=RuntimeError),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_fine_tune_that_fails_part_way_leaves_the_trained_model_as_it_was(trained_clf, monkeypatch, tmp_path, name):
    case = FAILURES[name]
    clf, inputs = trained_clf, ["good product", "awful drug"]
    before, predictions = _state(clf), clf.predict(inputs)
    if "patch" in case:
        where, exc = case["patch"]
        boom = _boom_after(2, exc)
        if where == "step":
            real = clf._step_loss
            monkeypatch.setattr(clf, "_step_loss", lambda *a, **k: (boom(), real(*a, **k))[1])
        elif where == "features":
            real_f = clf._features
            monkeypatch.setattr(clf, "_features", lambda batch: (boom(), boom(), boom(), real_f(batch))[-1])
        else:
            def fail(*a, **k):
                raise exc
            monkeypatch.setattr(where, fail)
    with pytest.raises(case["raises"]):
        clf.fine_tune(case.get("data", NEW_CLASSES), eval_data=case.get("eval_data"), strategy=case.get("strategy", "head"),
                      epochs=2, batch_size=4, progress=False, output_dir=tmp_path / "second")
    monkeypatch.undo()
    _assert_unchanged(clf, before, inputs, predictions)


def test_an_image_model_keeps_its_trained_head_when_fine_tune_fails(tmp_path):
    from ..conftest import make_colour_images

    img = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "lite"))   # red / blue
    train = make_colour_images(tmp_path / "px", n=8).assign(label=lambda d: d.label.map({"red": "warm", "blue": "cold"}))
    img.fine_tune(train, epochs=1, progress=False, output_dir=tmp_path / "r1")
    before, predictions = _state(img), img.predict(list(train.image[:3]))
    broken = train.assign(label=[["a", "b", "c"][i % 3] for i in range(8)])
    broken.loc[5, "image"] = str(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="Row 5 of the training data"):
        img.fine_tune(broken, epochs=1, progress=False, output_dir=tmp_path / "r2")
    _assert_unchanged(img, before, list(train.image[:3]), predictions)


def test_tune_leaves_the_model_as_it_was_whether_it_finishes_or_fails(trained_clf, monkeypatch):
    clf, inputs = trained_clf, ["good product", "awful drug"]
    before, predictions = _state(clf), clf.predict(inputs)
    result = clf.tune(NEW_CLASSES, n_trials=1, strategy="head", space={"epochs": ("int", 1, 2)})
    assert len(result.trials) == 1
    _assert_unchanged(clf, before, inputs, predictions)
    real = clf._step_loss
    boom = _boom_after(1, RuntimeError("trial crashed"))
    monkeypatch.setattr(clf, "_step_loss", lambda *a, **k: (boom(), real(*a, **k))[1])
    with pytest.raises(RuntimeError, match="trial crashed"):
        clf.tune(NEW_CLASSES, n_trials=2, strategy="head", space={"epochs": ("int", 1, 2)})
    monkeypatch.undo()
    _assert_unchanged(clf, before, inputs, predictions)


# ====================================================================== every task's fine_tune and evaluate
def test_translation_training_and_evaluation_data_with_gaps(mt):
    pairs = toy_pairs()
    refused(lambda: mt.fine_tune(pairs.assign(target=lambda d: d.target.where(d.index != 4, None)), progress=False),
            match="Row 4 of the training data has no text in column .target. \\(a missing value", kind=DataError)
    refused(lambda: mt.fine_tune(pairs.assign(source=lambda d: d.source.where(d.index != 2, 3.0)), progress=False),
            match="Row 2 of the training data has a float", kind=DataError)
    refused(lambda: mt.fine_tune(pairs.drop(columns="target"), progress=False), match="no 'target' column", kind=DataError)
    refused(lambda: mt.fine_tune(pairs.assign(target=lambda d: d.target.where(d.index != 1, "lang " * 200)), progress=False),
            match="Row 1 of the training data has a target of .* tokens", kind=DataError)
    refused(lambda: mt.evaluate(pairs.assign(target=""), errors="skip"), match="Row 0 of the evaluation data has empty text",
            kind=DataError)
    with pytest.warns(UserWarning, match="Skipped 1 of 16"):
        report = mt.evaluate(pairs.assign(source=lambda d: d.source.where(d.index != 3, None)), errors="skip")
    assert report.skipped == [3] and len(report.table) == 15


def test_image_and_speech_evaluation_data_with_gaps(img, asr, tmp_path):
    from ..conftest import make_colour_images, make_tones

    images = make_colour_images(tmp_path / "px", n=6)
    refused(lambda: img.evaluate(images.assign(label="green")), match="label 'green', which the model does not know",
            where="Row 0 of the evaluation data", kind=DataError)
    refused(lambda: img.evaluate(images.drop(columns="label")), match="no 'label' column", kind=DataError)
    with pytest.warns(UserWarning, match="Skipped 1 of 6"):
        report = img.evaluate(images.assign(image=lambda d: d.image.where(d.index != 2, str(tmp_path / "gone.png"))),
                              errors="skip")
    assert report.skipped == [2] and len(report.table) == 5
    clips = make_tones(tmp_path / "clips", n=4)
    refused(lambda: asr.evaluate(clips.rename(columns={"text": "transcript"})), match="no 'text' column.*columns=",
            kind=DataError)
    refused(lambda: asr.evaluate(clips.assign(text=[None, "a", "b", "c"])), match="Row 0 of the evaluation data has no text in column .text. \\(a missing value",
            kind=DataError)
