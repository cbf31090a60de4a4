"""Measure which placeholders and markup the packaged appkit-mt-en-de copies into its translations, and which
stand-in tokens survive when a glossary term or a protected span is replaced by one (issue 12).

Held-out application strings (never trained on) from the corpus of scripts/mt_corpus.py; a string's ``%s`` is
rewritten into the other forms (``%(name)s``, ``{name}``) and ``&`` accelerators / ``<b>`` tags are added to
strings without any, since the held-out applications use few of them.

    python scripts/mt_placeholders.py --corpus /work/cache/mt/corpus [--n 60] [--stand-ins]
"""
from __future__ import annotations

import argparse
import csv
import random
import re
import warnings
from pathlib import Path


def read(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [r[0] for r in list(csv.reader(fh, delimiter="\t"))[1:]]


def forms(strings: list[str], n: int, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """kind -> (source, the span that must come out unchanged)."""
    with_s = [s for s in strings if s.count("%s") == 1 and len(s.split()) >= 3]
    plain = [s for s in strings if not re.search(r"[%{}<>&]", s) and 3 <= len(s.split()) <= 12]
    tagged = [s for s in strings if re.search(r"<b>", s)]
    out = {"%s": [(s, "%s") for s in rng.sample(with_s, min(n, len(with_s)))]}
    out["%(name)s"] = [(s.replace("%s", "%(name)s"), "%(name)s") for s, _ in out["%s"]]
    out["{name}"] = [(s.replace("%s", "{name}"), "{name}") for s, _ in out["%s"]]
    sample = rng.sample(plain, min(n, len(plain)))
    out["&accelerator"] = [("&" + s, "&") for s in sample]      # kept: one accelerator, before any letter
    out["<b>tag</b>"] = [(f"<b>{s.split()[0]}</b> " + " ".join(s.split()[1:]), "<b>") for s in sample]
    out["<b>real</b>"] = [(s, "<b>") for s in tagged[:n]]
    return out


def _kept(span: str, text: str) -> bool:
    return len(re.findall(r"&(?=\w)", text)) == 1 if span == "&" else span in text


def glossary_cases(strings: list[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(source, the word a glossary would fix): a longish lower-case word inside a plain held-out string."""
    plain = [s for s in strings if not re.search(r"[%{}<>&]", s) and 3 <= len(s.split()) <= 12]
    cases = []
    for s in rng.sample(plain, len(plain)):
        words = [w for w in re.findall(r"\b[a-z]{5,}\b", s)]
        if words:
            cases.append((s, rng.choice(words)))
        if len(cases) == n:
            break
    return cases


def main() -> None:
    import appkit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/mt/corpus"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--stand-ins", action="store_true", help="also try other stand-ins for glossary terms")
    args = ap.parse_args()
    rng = random.Random(0)
    strings = read(args.corpus / "test_apps.tsv")
    mt = appkit.load("translation")
    print(f"{'kind':20s} {'model alone':>12s} {'appkit':>8s} {'of':>4s}")
    for kind, cases in forms(strings, args.n, rng).items():
        srcs = [s for s, _ in cases]
        alone, protected = (mt.predict(srcs, protect=False, progress=False), mt.predict(srcs, progress=False))
        kept = [sum(_kept(span, r["translation"]) for (_, span), r in zip(cases, out)) for out in (alone, protected)]
        print(f"{kind:20s} {kept[0]:12d} {kept[1]:8d} {len(cases):4d}")
    cases = glossary_cases(strings, args.n, rng)
    for stand_in in ("ZX1", "XQZ", "%s", "%1", "{0}", "__0__", "<x1>") if args.stand_ins else ():
        srcs = [re.sub(rf"\b{w}\b", stand_in, s, count=1) for s, w in cases]
        got = [r["translation"] for r in mt.predict(srcs, progress=False)]
        print(f"stand-in {stand_in!r:10s} {sum(g.count(stand_in) == 1 for g in got):4d} {len(cases):4d}")
    got = mt.predict([s for s, _ in cases], progress=False)
    print(f"{'term copied as is':20s} {sum(w in r['translation'] for (_, w), r in zip(cases, got)):12d}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = sum(all(mt.predict(s, glossary={w: w})["glossary"].values()) for s, w in cases)
        fixed = sum(all(mt.predict(s, glossary={w: "Fachbegriff"})["glossary"].values()) for s, w in cases)
    print(f"{'glossary: verbatim':20s} {'':12s} {kept:8d} {len(cases):4d}")
    print(f"{'glossary: fixed term':20s} {'':12s} {fixed:8d} {len(cases):4d}")

if __name__ == "__main__":
    main()
