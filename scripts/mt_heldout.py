"""Write the committed held-out sample (data/mt-en-de-heldout/heldout.tsv) from the corpus of mt_corpus.py.

A seeded random sample of the held-out applications' strings and of the held-out help sentences
(never trained on: their applications and pages are out of train.tsv). ``seen_in_training`` says
whether the same English string also occurs in another, trained-on program (common strings such as
"Cancel" do), so scores can be given on unseen strings alone.

    python scripts/mt_heldout.py --corpus /work/cache/mt/corpus --out data/mt-en-de-heldout --apps 400 --help-sentences 200
"""
from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    return rows[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/mt/corpus"))
    ap.add_argument("--out", type=Path, default=Path("data/mt-en-de-heldout"))
    ap.add_argument("--apps", type=int, default=400)
    ap.add_argument("--help-sentences", type=int, default=200)
    args = ap.parse_args()
    seen = {row[0] for row in read(args.corpus / "train.tsv")}
    rng = random.Random(0)
    apps = read(args.corpus / "test_apps.tsv")
    helps = read(args.corpus / "test_help.tsv")
    rows = [("apps", *r) for r in rng.sample(apps, min(args.apps, len(apps)))]
    rows += [("help", *r) for r in rng.sample(helps, min(args.help_sentences, len(helps)))]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "heldout.tsv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["set", "source", "target", "app", "seen_in_training"])
        w.writerows([(*r, int(r[1] in seen)) for r in rows])
    print(f"wrote {len(rows)} rows to {args.out / 'heldout.tsv'}")


if __name__ == "__main__":
    main()
