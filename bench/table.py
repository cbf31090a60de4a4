"""Print the one table `make bench` ends with, from the results each bench script wrote to bench/results/.

Columns: task, appkit's configuration, the peer, appkit's and the peer's seconds (median of interleaved
rounds, bench/_fair.py), the ratio (peer / appkit: above 1 means appkit is faster), quality (appkit's vs the
peer's), working memory, and the decoding / precision differences. The machine and time of each run are
printed under the table, and a script whose results are missing is named, so a stale or partial table shows.

    python bench/table.py [--markdown]
"""
from __future__ import annotations

import argparse
import json

from _fair import RESULTS

# what `make bench` writes, in table order; any other results file found is listed after these
SCRIPTS = ["text_predict_short", "text_predict_long", "image_predict_float32", "asr", "asr_long", "translate", "finetune",
           "predict_memory"]
COLUMNS = ["task", "appkit", "peer", "appkit_s", "peer_s", "ratio", "quality", "memory", "notes"]
HEADERS = ["task", "appkit", "peer", "appkit s", "peer s", "ratio", "quality (appkit vs peer)", "working memory",
           "differences"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    args = ap.parse_args()
    runs, missing = [], []
    extra = sorted(p.stem for p in RESULTS.glob("*.json") if p.stem not in SCRIPTS)
    for name in SCRIPTS + extra:
        path = RESULTS / f"{name}.json"
        (runs.append(json.loads(path.read_text())) if path.exists() else missing.append(name))
    # a task measured again by a later run (bench/finetune.py --tasks text writes finetune_text.json beside the whole
    # run's finetune.json) is shown from the latest run only
    latest = {}
    for run in runs:
        for r in run["rows"]:
            latest[r["task"]] = max(latest.get(r["task"], ""), run["when"])
    rows = [[("" if r.get(c) is None else (f"{r[c]:.2f}x" if c == "ratio" else str(r[c]))) for c in COLUMNS]
            for run in runs for r in run["rows"] if run["when"] == latest[r["task"]]]
    if args.markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
        print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths)))
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print()
    for run in runs:
        print(f"- {run['script']}: {run['when']}, {run['machine']}, load average {run['load_average_1min_at_end']} "
              f"at the end, process peak {run['process_peak_mb']} MB")
    if missing:
        print(f"- not run yet (no bench/results/<name>.json): {', '.join(missing)}")


if __name__ == "__main__":
    main()
