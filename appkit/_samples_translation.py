"""Parallel text for translation: the human-translated interface strings of the programs on this machine.

Every Debian program with a user interface ships its translations as gettext ``.mo`` files under
``/usr/share/locale/<lang>/LC_MESSAGES/``: English message -> the translators' text. They are
real, human work under each program's own (free) licence; short and technical (menus, errors,
command-line help), so a model trained on them translates software text, not news. A base
machine holds ~55,000 unique English-German pairs in 89 programs. Hold whole programs out for
testing (``app`` column), not random strings: strings of one program share their words.
"""
from __future__ import annotations

import gettext
from pathlib import Path

import pandas as pd

from .errors import DataError, _msg

LOCALE_DIR = Path("/usr/share/locale")


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
