"""Rebuild the English->German corpus for appkit's shipped translation model (appkit-mt-en-de).

Sources, all real human translations that Debian ships (nothing is installed: ``apt-get download``
+ ``dpkg -x`` into a cache folder outside the repository):
- UI strings: the German .mo files of GUI packages (below) plus the base machine's
  /usr/share/locale/de/LC_MESSAGES/*.mo; msgctxt (before ``\\x04``) dropped, GTK ``_`` and
  LibreOffice ``~`` mnemonics removed on both sides, whitespace collapsed.
- Documentation prose: LibreOffice's help pages in en-US and de, aligned by file + element id.

Held out, never trained on: whole applications (HELD_OUT_APPS) and ~2% of help pages chosen by a
hash of their path; help sentences of held-out pages are also removed from training wherever else
they occur. Writes train.tsv, test_apps.tsv, test_help.tsv (source, target, app) and licences.txt.

    python scripts/mt_corpus.py --cache /work/cache/mt
"""
from __future__ import annotations

import argparse
import csv
import gettext
import hashlib
import html
import re
import subprocess
from pathlib import Path

GUI_PACKAGES = [
    "libreoffice-l10n-de", "inkscape", "gimp-data", "digikam-data", "gramps", "gnucash-common", "darktable",
    "gnome-control-center-data", "nautilus-data", "gedit-common", "gnome-software-common", "rhythmbox-data",
    "evince-common", "gnome-calculator", "eog", "baobab",
    # held out below
    "shotwell-common", "totem-common", "gnome-disk-utility", "file-roller",
]
HELD_OUT_APPS = ("shotwell-common", "totem-common", "gnome-disk-utility", "file-roller")
HELP_PACKAGES = ["libreoffice-help-en-us", "libreoffice-help-de"]
HELP_TEST_SHARE = 0.02

_WS = re.compile(r"\s+")
_MNEMONIC = re.compile(r"(?<![\w%])[_~](?=\w)")     # "_Open", "Save ~As"; not "%s_x" or "a_b"
_TAG = re.compile(r"<[^>]+>")
_HELP_ELEMENT = re.compile(r'<(p|h[1-6]|td|li)\b[^>]*\bid="((?:par|hd)_id[^"]*)"[^>]*>(.*?)</\1>', re.S)


def fetch(packages: list[str], cache: Path) -> dict[str, Path]:
    """Download each .deb once and unpack it to cache/x/<package>; returns package -> folder."""
    debs, out = cache / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for p in packages:
        target = cache / "x" / p
        if not target.exists():
            deb = next(debs.glob(f"{p}_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
        out[p] = target
    return out


def clean(text: str, *, mnemonic: bool) -> str:
    text = _WS.sub(" ", text).strip()
    return _MNEMONIC.sub("", text, count=1) if mnemonic else text


def mo_pairs(path: Path):
    """(English, German) pairs of one .mo file; plural forms give their singular."""
    try:
        with open(path, "rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog
    except Exception as exc:          # a broken catalogue costs its strings, not the run
        print(f"skip {path}: {exc}")
        return
    for key, german in catalog.items():
        if isinstance(key, tuple):
            key, form = key
            if form != 0:
                continue
        english = key.split("\x04", 1)[-1]          # drop msgctxt
        if not english or not german:
            continue
        mnemonic = bool(_MNEMONIC.search(english))
        yield clean(english, mnemonic=mnemonic), clean(german, mnemonic=mnemonic)


def keep(en: str, de: str) -> bool:
    """Drop what teaches nothing: empty, huge, letter-less, or lengths that cannot match."""
    if not en or not de or len(en) > 400 or len(de) > 600:
        return False
    if not re.search(r"[A-Za-z]{2}", en):
        return False
    if len(en) > 20 and not 0.3 < len(de) / len(en) < 3.5:
        return False
    return True


def ui_pairs(folders: dict[str, Path]):
    for app, folder in folders.items():
        # usr/share/locale/de/... for most programs; LibreOffice keeps its own under program/resource/de/...
        for mo in sorted(folder.rglob("de/LC_MESSAGES/*.mo")):
            for en, de in mo_pairs(mo):
                yield app, en, de
    for mo in sorted(Path("/usr/share/locale/de/LC_MESSAGES").glob("*.mo")):
        for en, de in mo_pairs(mo):
            yield f"base:{mo.stem}", en, de


def help_elements(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return {m.group(2): clean(html.unescape(_TAG.sub("", m.group(3))), mnemonic=False)
            for m in _HELP_ELEMENT.finditer(text)}


def help_pairs(en_root: Path, de_root: Path):
    """(page, English, German) for every element id present in both languages' copy of a page."""
    en_text = next(en_root.rglob("help/en-US/text"))
    de_text = next(de_root.rglob("help/de/text"))
    for en_page in sorted(en_text.rglob("*.html")):
        rel = en_page.relative_to(en_text)
        de_page = de_text / rel
        if not de_page.exists():
            continue
        en, de = help_elements(en_page), help_elements(de_page)
        for eid, en_s in en.items():
            if eid in de:
                yield str(rel), en_s, de[eid]


def held_out_page(rel: str) -> bool:
    return int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < HELP_TEST_SHARE


def licences(folders: dict[str, Path]) -> str:
    lines = []
    for p, folder in folders.items():
        copyright_file = next(iter(folder.rglob(f"usr/share/doc/{p}/copyright")), None)
        found = sorted(set(re.findall(r"^License:\s*(\S.*)$", copyright_file.read_text(errors="replace"), re.M))) \
            if copyright_file else []
        lines.append(f"{p}: {', '.join(found) if found else 'see /usr/share/doc/' + p + '/copyright'}")
    return "\n".join(lines) + "\n"


def write(path: Path, rows) -> int:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(["source", "target", "app"])
        w.writerows(rows)
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/mt"))
    args = ap.parse_args()
    folders = fetch(GUI_PACKAGES + HELP_PACKAGES, args.cache)
    gui = {p: folders[p] for p in GUI_PACKAGES}

    train, test_apps, seen = {}, {}, set()
    for app, en, de in ui_pairs(gui):
        if not keep(en, de):
            continue
        bucket = test_apps if app in HELD_OUT_APPS else train
        bucket.setdefault((en, de), app)
    test_help, help_train = {}, {}
    for page, en, de in help_pairs(folders["libreoffice-help-en-us"], folders["libreoffice-help-de"]):
        if keep(en, de):
            (test_help if held_out_page(page) else help_train).setdefault((en, de), "help:" + page)
    help_test_sources = {en for en, _ in test_help}
    for (en, de), page in help_train.items():
        if en not in help_test_sources:             # a sentence repeated on a held-out page stays unseen
            train.setdefault((en, de), page)
    # one reference per held-out source (the first seen), so a score compares like with like
    test_apps_rows, test_help_rows = {}, {}
    for (en, de), app in test_apps.items():
        test_apps_rows.setdefault(en, (en, de, app))
    for (en, de), page in test_help.items():
        test_help_rows.setdefault(en, (en, de, page))
    seen = {en for en, _ in train}
    out = args.cache / "corpus"
    out.mkdir(exist_ok=True)
    n = write(out / "train.tsv", [(en, de, app) for (en, de), app in train.items()])
    a = write(out / "test_apps.tsv", list(test_apps_rows.values()))
    h = write(out / "test_help.tsv", list(test_help_rows.values()))
    novel = sum(en not in seen for en in test_apps_rows)
    (out / "licences.txt").write_text(licences(folders))
    print(f"train {n} pairs ({sum(v.startswith('help:') for v in train.values())} help); "
          f"test: {a} held-out app strings ({novel} never seen in training), {h} held-out help sentences")


if __name__ == "__main__":
    main()
