"""`appkit` on the command line: list what is available, predict, and run the demo.

    appkit tasks
    appkit models [--task TASK]
    appkit predict TASK [--model NAME_OR_FOLDER] INPUT [INPUT ...]
    appkit demo [--out reports]      # fine-tune + evaluate a text classifier on real drug reviews,
                                     # then run the case-study notebooks into HTML pages + index.html
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _demo(out: str, strategy: str) -> int:
    import appkit
    from appkit.samples import drug_reviews

    os.makedirs(out, exist_ok=True)
    train, test = drug_reviews("train"), drug_reviews("test")
    print(f"Data: {len(train)} real Drugs.com reviews to train on, {len(test)} held out (labels: negative/neutral/positive)")
    clf = appkit.load("text-classification", labels=["negative", "neutral", "positive"])
    print(f"Model: {clf}")
    zero = clf.evaluate(test).metrics
    print(f"Zero-shot (no training, label-name similarity): accuracy {zero['accuracy']:.3f}, macro-F1 {zero['macro_f1']:.3f}")
    t0 = time.perf_counter()
    run = clf.fine_tune(train, strategy=strategy, seed=0)
    print(f"Fine-tuned ({run.strategy}) in {time.perf_counter() - t0:.0f} s")
    report = clf.evaluate(test)
    m = report.metrics
    print(f"Fine-tuned: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}  ({next(iter(report.baseline))}: "
          f"{next(iter(report.baseline.values())):.3f})")
    html = report.to_html(os.path.join(out, "demo-report.html"), title="Drug review sentiment: held-out evaluation")
    folder = clf.save(os.path.join(out, "demo-text-classifier"))
    print(f"Report: {html}\nSaved model: {folder} (loads with appkit.load or transformers.pipeline)")
    print(json.dumps({"zero_shot": zero, "fine_tuned": m}, indent=1))
    from appkit import casebook  # the case-study notebooks, run in a real kernel and published next to this report

    runs = casebook.run_all(out, extra={"Drug review sentiment: the demo's held-out evaluation": "demo-report.html"})
    for r in runs:
        print(f"Notebook {r.source.name}: {'FAILED: ' + r.error if r.error else f'{r.html} ({r.seconds:.0f} s)'}")
    print(f"Index: {os.path.join(out, 'index.html')}")
    return 0 if all(not r.error for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tasks", help="list tasks")
    m = sub.add_parser("models", help="list catalogue models")
    m.add_argument("--task")
    p = sub.add_parser("predict", help="predict a few inputs (texts, image or audio paths)")
    p.add_argument("task")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--model")
    p.add_argument("--labels", help="comma-separated class names (zero-shot text classification)")
    d = sub.add_parser("demo", help="fine-tune and evaluate a text classifier on real data, write an HTML report")
    d.add_argument("--out", default="reports")
    d.add_argument("--strategy", default="auto")
    args = ap.parse_args(argv)

    import appkit
    from appkit.errors import AppkitError

    try:
        if args.cmd == "tasks":
            print("\n".join(appkit.list_tasks()))
        elif args.cmd == "models":
            for r in appkit.list_models(args.task):
                print(f"{r['name']:24s} {r['task']:22s} offline={str(r['offline']):5s} {r['licence']:12s} {r['description']}")
        elif args.cmd == "predict":
            labels = args.labels.split(",") if args.labels else None
            model = appkit.load(args.task, args.model, labels=labels)
            for item, res in zip(args.inputs, model.predict(args.inputs)):
                print(json.dumps({"input": item, **res}, default=float))
        elif args.cmd == "demo":
            return _demo(args.out, args.strategy)
    except AppkitError as exc:  # user mistakes: the message, not a traceback
        print(f"appkit: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
