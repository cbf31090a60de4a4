"""Turn what a user has (DataFrame, list of dicts, datasets.Dataset, CSV/JSONL
path, folder) into one validated pandas DataFrame, and check it before any
model work starts."""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError, _msg, warn
from .media import AUDIO_SUFFIXES, IMAGE_SUFFIXES

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}


def read_table(data: Any, *, where: str) -> pd.DataFrame:
    """Any supported tabular input -> a fresh DataFrame (the user's object is never changed)."""
    df = _read_any(data, where=where)
    if len(df) == 0:
        raise DataError(_msg(f"The {where} has no rows", where=f"its columns are {list(df.columns)}",
                             fix="check the filter or query that built it"))
    return df


def _read_any(data: Any, *, where: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data.copy()
    if isinstance(data, (str, Path)):
        return _read_file(Path(data), where=where)
    if isinstance(data, list):
        if not data:
            raise DataError(_msg(f"The {where} is an empty list", fix="pass at least one example"))
        if not all(isinstance(r, dict) for r in data):
            bad = next(i for i, r in enumerate(data) if not isinstance(r, dict))
            raise DataError(_msg(
                f"The {where} is a list but item {bad} is a {type(data[bad]).__name__}, not a dict",
                expected="a list of dicts such as {'text': ..., 'label': ...}",
                fix="build the list as [{'text': t, 'label': y} for t, y in zip(texts, labels)]",
            ))
        return pd.DataFrame(data)
    if type(data).__module__.startswith("datasets"):
        return data.to_pandas()
    raise DataError(_msg(
        f"The {where} has an unsupported type {type(data).__name__}",
        expected="a pandas DataFrame, a list of dicts, a datasets.Dataset, a CSV/JSONL file path or a folder",
    ))


def _read_file(path: Path, *, where: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(_msg(f"The {where} file {str(path)!r} does not exist", fix="check the path (it is relative to the notebook's folder)"))
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(_msg(
            f"Cannot read the {where} from {str(path)!r}", expected=f"a file ending in one of {sorted(TABLE_SUFFIXES)} or a folder of labelled sub-folders",
        ))
    if path.is_dir():
        raise DataError(_msg(f"The {where} {str(path)!r} is a folder", expected="a CSV/JSONL file, or a folder this task reads"))
    if path.stat().st_size == 0:
        raise DataError(_msg(f"The {where} file {str(path)!r} is empty (0 bytes)", fix="export the data again"))
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            df = _read_json(_decode(path, where=where), path, where=where, lines=suffix == ".jsonl")
        else:
            text = _decode(path, where=where)
            sep = "\t" if suffix == ".tsv" else _sniff_separator(text)
            # an Excel export ends in rows of bare separators (';;'): rows with no value at all are not data
            df = pd.read_csv(io.StringIO(text), sep=sep).dropna(how="all")
    except DataError:
        raise
    except Exception as exc:  # pandas' parser errors name the line; keep that
        raise DataError(_msg(f"Could not read the {where} file {str(path)!r}: {str(exc).strip()}",
                             fix="check that the file is valid " + suffix[1:].upper())) from None
    if df.empty:
        raise DataError(_msg(f"The {where} file {str(path)!r} has no rows", fix="check that it holds data below its header"))
    return df.reset_index(drop=True)


def _decode(path: Path, *, where: str) -> str:
    """A text file's content: UTF-8 (with or without BOM), UTF-16 (Excel's 'Unicode text'), else Windows-1252
    or Latin-1 (Excel's CSV on Windows), announced, since a wrong guess shows as odd accents."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if b"\x00" in raw[:4096]:
        raise DataError(_msg(f"The {where} file {str(path)!r} is not a text file (it holds binary data)",
                             expected="a CSV or JSONL text file", fix="export the data as CSV (UTF-8)"))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_at = exc.start
    for encoding in ("cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        warnings.warn(f"The {where} file {str(path)!r} is not UTF-8 (byte {bad_at}); it was read as {encoding}. "
                      "If accented letters look wrong, save the file as 'CSV UTF-8'.", UserWarning, stacklevel=5)
        return text
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _sniff_separator(text: str) -> str:
    """The separator of the header line: ',' unless ';' (European Excel), tab or '|' is more common there."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts, quoted = dict.fromkeys([",", ";", "\t", "|"], 0), False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[","] else ","


def _read_json(text: str, path: Path, *, where: str, lines: bool) -> pd.DataFrame:
    """JSON Lines read line by line, so an error names its line; a .json file holds a list of objects."""
    example = "{\"text\": \"...\", \"label\": \"...\"}"
    if not lines:
        obj = json.loads(text)
        return pd.DataFrame(obj) if isinstance(obj, (list, dict)) else pd.DataFrame([obj])
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(_msg(f"Line {n} of the {where} file {str(path)!r} is not valid JSON ({exc.msg}, column {exc.colno})",
                                 expected=f"one JSON object per line, e.g. {example}", fix="fix or remove that line")) from None
        if not isinstance(obj, dict):
            raise DataError(_msg(f"Line {n} of the {where} file {str(path)!r} is a JSON {type(obj).__name__}, not an object",
                                 expected=f"one JSON object per line, e.g. {example}", fix="fix or remove that line"))
        rows.append(obj)
    return pd.DataFrame(rows)


def apply_columns(df: pd.DataFrame, *, required: list[str], columns: dict[str, str] | None, where: str) -> pd.DataFrame:
    """Rename the user's columns to appkit's names and check the required ones are there."""
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(_msg(
                f"columns= names {missing} but the {where} has no such column",
                where=f"the {where}'s columns are {list(df.columns)}", fix="correct the names in columns={...}",
            ))
        df = df.rename(columns=columns)
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = ", ".join(f"'<your column>': '{c}'" for c in missing)
        raise DataError(_msg(
            f"The {where} has no {missing[0]!r} column",
            where=f"its columns are {list(df.columns)}", expected=f"columns {required}",
            fix=f"rename the columns, or pass columns={{{hint}}}",
        ))
    return df.reset_index(drop=True)


def check_text_item(item, *, where: str) -> str:
    """One text to predict on: a non-empty string, or a DataError saying which input and how to fix it."""
    from .errors import _cap

    if not isinstance(item, str):
        raise DataError(_msg(f"{_cap(where)} is a {type(item).__name__} ({item!r:.60}), not text",
                             expected="a string (or a list of strings)",
                             fix="convert it with str(), or drop missing values first (df.dropna())"))
    if not item.strip():
        raise DataError(_msg(f"{_cap(where)} is empty text", expected="at least one word",
                             fix="remove empty texts before predicting"))
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:   # half an emoji from a broken decoding: tokenizers refuse the whole text
        item = item.encode("utf-8", "replace").decode("utf-8")
    return item


def check_text(values: list, *, where: str, column: str = "text") -> None:
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            raise DataError(_msg(
                f"Row {i} of the {where} has no text in column {column!r} (a missing value)",
                expected="a non-empty string in every row", fix=f"drop or fill missing rows first, e.g. df.dropna(subset=[{column!r}])",
            ))
        if not isinstance(v, str):
            raise DataError(_msg(
                f"Row {i} of the {where} has a {type(v).__name__} ({v!r:.60}) in column {column!r}, not text",
                expected="a non-empty string in every row", fix=f"convert the column to text, e.g. df[{column!r}].astype(str)",
            ))
        if not v.strip():
            raise DataError(_msg(
                f"Row {i} of the {where} has empty text in column {column!r}",
                expected="a non-empty string in every row", fix=f"remove empty rows, e.g. df[df[{column!r}].str.strip() != '']",
            ))


def check_labels(train_labels: list, *, where: str = "training data", min_per_class: int = 2) -> list[str]:
    """Labels as strings; errors on missing labels and on classes too small to learn or split."""
    for i, y in enumerate(train_labels):
        if y is None or (isinstance(y, float) and y != y):
            raise DataError(_msg(f"Row {i} of the {where} has no label", fix="fill or drop rows without a label"))
    counts = pd.Series([str(y) for y in train_labels]).value_counts()
    if len(counts) < 2:
        raise DataError(_msg(
            f"The {where} has a single label {counts.index[0]!r}", expected="at least two different labels to learn from",
            fix="add examples of the other classes",
        ))
    small = counts[counts < min_per_class]
    if len(small):
        raise DataError(_msg(
            f"The label(s) {list(small.index)} have fewer than {min_per_class} examples in the {where}",
            where=f"counts: {small.to_dict()}", fix="add more examples of these classes or merge them into another",
        ))
    return sorted(counts.index)


def check_known_labels(labels: list, known: list[str], *, where: str) -> None:
    known_set = set(known)
    for i, y in enumerate(labels):
        if str(y) not in known_set:
            raise DataError(_msg(
                f"Row {i} of the {where} has the label {str(y)!r}, which the model does not know",
                where=f"known labels: {sorted(known_set)}",
                fix="fix the label, drop the row, or fine-tune on data that includes this class",
            ))


def warn_shared_duplicates(train_keys: list, eval_keys: list, *, what: str = "texts", column: str = "text") -> int:
    """Examples in both train and eval make scores look better than they are."""
    shared = set(map(str, train_keys)) & set(map(str, eval_keys))
    if shared:
        warn(
            f"{len(shared)} {what if len(shared) > 1 else what.rstrip('s')} "
            f"{'appear' if len(shared) > 1 else 'appears'} in both the training and the evaluation data, so the evaluation "
            f"overstates accuracy. Remove them from one side (e.g. test[~test[{column!r}].isin(train[{column!r}])])."
        )
    return len(shared)


def train_test_split(data: Any, *, test_size: float = 0.2, seed: int = 0, stratify: str | None = "label",
                     columns: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified split that keeps every class on both sides."""
    from sklearn.model_selection import train_test_split as sk_split

    df = apply_columns(read_table(data, where="data"), required=[stratify] if stratify else [], columns=columns, where="data")
    strat = df[stratify].astype(str) if stratify else None
    if strat is not None:
        counts = strat.value_counts()
        if counts.min() < 2:
            raise DataError(_msg(
                f"Cannot split: label {counts.idxmin()!r} has only {counts.min()} example",
                fix="add examples, drop that class, or pass stratify=None",
            ))
    try:
        train, test = sk_split(df, test_size=test_size, random_state=seed, stratify=strat)
    except ValueError as exc:  # too small a test set for the number of classes
        raise DataError(_msg(f"Cannot split the data: {exc}", fix="use a larger test_size or more data")) from None
    return train.reset_index(drop=True), test.reset_index(drop=True)


def fingerprint(df: pd.DataFrame) -> str:
    """A short content hash, stored with saved models and used to cache features."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes())
    return h.hexdigest()[:16]


def content_key(x) -> str:
    """A path or text as itself; an in-memory item (array, bytes, PIL image, (array, rate), dict) as a
    hash of its content, since printing such objects elides it and two different ones could collide."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    h = hashlib.blake2b(digest_size=12)

    def feed(v) -> None:
        if isinstance(v, (bytes, bytearray)):
            h.update(bytes(v))
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for e in v:
                feed(e)
        elif hasattr(v, "tobytes"):   # numpy arrays, PIL images
            h.update(f"{getattr(v, 'dtype', getattr(v, 'mode', ''))}{getattr(v, 'shape', getattr(v, 'size', ''))}".encode())
            h.update(v.tobytes())
        else:
            h.update(repr(v).encode())

    feed(x)
    return f"<content {h.hexdigest()}>"


def data_fingerprint(task, df: pd.DataFrame) -> str:
    """Content fingerprint of a data frame, with inputs identified by the task (in-memory images and audio
    by a hash of their content, not by how they print)."""
    keys = [task._dedup_key(x) for x in df[task.input_column]]
    return fingerprint(df.drop(columns=[task.input_column]).assign(_input=keys))


# ---------------------------------------------------------------------- folders of media
_TRANSCRIPT_NAMES = ("text", "transcript", "transcription", "sentence", "normalized_text")
_FILE_NAMES = ("audio", "file_name", "file", "path", "filename")


def read_image_folder(path: Path, *, where: str) -> pd.DataFrame:
    """Sub-folders are the labels; every image file below one is an example of that label."""
    rows, other = [], []
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        other.append(f.name)
    for d in subdirs:
        for f in sorted(d.rglob("*")):
            if not f.is_file() or any(part.startswith(".") for part in f.relative_to(path).parts):
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append({"image": str(f), "label": d.name})
            else:
                other.append(str(f.relative_to(path)))
    labels = sorted({r["label"] for r in rows})
    if not rows:
        raise DataError(_msg(
            f"The {where} folder {str(path)!r} holds no images in sub-folders",
            expected="one sub-folder per label with the images inside, e.g. photos/cat/1.jpg, photos/dog/2.jpg",
            fix="put the images in sub-folders named after their labels"
                + (f" (found only: {', '.join(other[:5])})" if other else "")))
    if len(labels) < 2 and where.startswith("training"):
        raise DataError(_msg(
            f"The {where} folder {str(path)!r} has a single label {labels[0]!r}",
            expected="at least two sub-folders (labels) with images, to learn to tell them apart",
            fix="add a sub-folder of images for each other class"))
    if other:
        warn(f"Ignored {len(other)} file(s) in {str(path)!r} that are not images in a label "
                      f"sub-folder: {', '.join(other[:10])}" + (" ..." if len(other) > 10 else ""))
    return pd.DataFrame(rows)


def read_transcript_folder(path: Path, *, where: str) -> pd.DataFrame:
    """A folder of audio files with a transcripts table (CSV/TSV/JSONL naming each file) or .txt files beside them."""
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"))
    if tables:
        df = read_table(tables[0], where=where)
        fcol = next((c for c in _FILE_NAMES if c in df.columns), None)
        tcol = next((c for c in _TRANSCRIPT_NAMES if c in df.columns), None)
        if fcol is None or tcol is None:
            raise DataError(_msg(f"The transcripts file {tables[0].name!r} in the {where} folder needs a file column and a transcript column",
                                 where=f"its columns are {list(df.columns)}",
                                 expected=f"one of {list(_FILE_NAMES)} and one of {list(_TRANSCRIPT_NAMES)}"))
        df = df.rename(columns={fcol: "audio", tcol: "text"})
        df["audio"] = [str(v) if Path(str(v)).is_absolute() else str(path / str(v)) for v in df["audio"]]
        return df
    rows = []
    for f in sorted(path.rglob("*")):
        if f.suffix.lower() in AUDIO_SUFFIXES and f.with_suffix(".txt").exists():
            rows.append({"audio": str(f), "text": f.with_suffix(".txt").read_text(encoding="utf-8").strip()})
    if not rows:
        raise DataError(_msg(f"The {where} folder {str(path)!r} has no transcripts",
                             expected="a metadata.csv/transcripts.jsonl naming each file with its text, or a .txt beside each audio file"))
    return pd.DataFrame(rows)
