"""Parallel text for translation (English -> another language), from human-translated gettext catalogues.

Every Debian program with a user interface ships its translations as gettext ``.mo`` files under
``/usr/share/locale/<lang>/LC_MESSAGES/``: English message -> the translators' text. They are
real, human work under each program's own (free) licence; short and technical (menus, errors,
command-line help), so a model trained on them translates software text, not news. A base
machine holds ~55,000 unique English-German pairs in 89 programs (``ui_strings``). Hold whole
programs out for testing (``app`` column), not random strings: strings of one program share their words.
"""
from __future__ import annotations

import gettext
from pathlib import Path

import pandas as pd

from ..errors import DataError, _msg, unknown_name
from ._sources import REPO_DATA, missing, package_dir

LOCALE_DIR = Path("/usr/share/locale")
ISO_CODES_LOCALE = LOCALE_DIR


def _pairs(mo: Path) -> list[tuple[str, str]]:
    with open(mo, "rb") as fh:
        catalog = gettext.GNUTranslations(fh)._catalog
    out = []
    for msgid, msgstr in catalog.items():
        if isinstance(msgid, str) and msgid and isinstance(msgstr, str) and msgstr.strip():
            out.append((msgid.split("\x04", 1)[-1], msgstr))  # drop a message context
    return out


def shop_strings(lang: str = "de") -> pd.DataFrame:
    """django-oscar 4.2.1's shop interface strings, English -> ``lang``, translated by people (BSD-3-Clause).

    Columns: ``source`` (English), ``target``. Plural forms and the catalogue header are left out.
    """
    mo = package_dir("oscar", "django-oscar==4.2.1") / "locale" / lang / "LC_MESSAGES" / "django.mo"
    if not mo.exists():
        have = sorted(p.parent.parent.name for p in mo.parents[2].glob("*/LC_MESSAGES/django.mo"))
        raise missing(f"django-oscar's {lang!r} translation", where=str(mo), fix=f"pick one of {have}")
    return pd.DataFrame(_pairs(mo), columns=["source", "target"]).drop_duplicates("source", ignore_index=True)


def currency_names(lang: str = "de") -> pd.DataFrame:
    """ISO 4217 currency names, English -> ``lang``, from Debian ``iso-codes`` (LGPL-2.1-or-later).

    Columns: ``source`` (English name), ``target``.
    """
    mo = ISO_CODES_LOCALE / lang / "LC_MESSAGES" / "iso_4217.mo"
    if not mo.exists():
        raise missing("the Debian package iso-codes", where=str(mo), fix="run `sudo apt-get install -y iso-codes`")
    return pd.DataFrame(_pairs(mo), columns=["source", "target"])


def heldout_translations(kind: str = "help") -> pd.DataFrame:
    """English -> German text that appkit-mt-en-de never trained on (data/mt-en-de-heldout, made by
    scripts/mt_heldout.py): ``kind="help"``: 200 sentences of held-out LibreOffice help pages (MPL-2.0);
    ``"apps"``: 400 interface strings of four programs left out of training (GPL-2+).

    Columns: ``source`` (English), ``target`` (German, by the projects' translators), ``app`` (the program or
    help page), ``seen_in_training`` (1 where the same English occurs in another, trained-on program).
    """
    if kind not in ("help", "apps"):
        raise unknown_name("held-out translation set", kind, ["help", "apps"])
    df = pd.read_csv(REPO_DATA / "mt-en-de-heldout" / "heldout.tsv", sep="\t", keep_default_na=False)
    return df[df.set == kind].drop(columns="set").reset_index(drop=True)


def ui_strings(lang: str = "de", *, max_chars: int = 200, locale_dir: str | Path = LOCALE_DIR) -> pd.DataFrame:
    """English -> ``lang`` interface strings from every installed ``.mo`` file.

    Columns: ``source`` (English), ``target`` (the translation), ``app`` (the program's .mo name).
    One row per unique English string (the first program, by name, wins); plural forms, the
    catalogue header and strings over ``max_chars`` are left out; a message context (gettext's
    ``context\\x04message``) is dropped from the source.
    """
    folder = Path(locale_dir) / lang / "LC_MESSAGES"
    files = sorted(folder.glob("*.mo"))
    if not files:
        have = sorted(p.name for p in Path(locale_dir).glob("*") if list(p.glob("LC_MESSAGES/*.mo")))
        raise DataError(_msg(f"No translations for {lang!r} are installed in {str(folder)!r}",
                             expected=f"one of the installed languages: {have[:40]}" if have else "gettext .mo files",
                             fix="pass another lang=..., or install a program's translations (e.g. apt-get install "
                                 "libreoffice-l10n-de)"))
    rows, seen, unreadable = [], set(), []
    for f in files:
        try:
            with open(f, "rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog
        except (OSError, UnicodeDecodeError, ValueError):
            unreadable.append(f.name)      # e.g. a catalogue whose header names no charset: not worth guessing
            continue
        for msgid, msgstr in catalog.items():
            if isinstance(msgid, tuple) or not msgid or not isinstance(msgstr, str) or not msgstr.strip():
                continue
            source = msgid.split("\x04", 1)[-1]
            if source in seen or len(source) > max_chars or len(msgstr) > max_chars:
                continue
            seen.add(source)
            rows.append({"source": source, "target": msgstr, "app": f.stem})
    df = pd.DataFrame(rows, columns=["source", "target", "app"])
    df.attrs["unreadable"] = unreadable
    return df
