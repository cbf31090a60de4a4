"""`appkit` on the command line: the notebook's calls for scripts, schedulers and applications.

examples:
  appkit models --task text-classification
  appkit predict text-classification "The nausea was awful" --labels negative,positive
  appkit predict models/reviews reviews.csv --column body --output predictions.csv
  appkit predict models/photos photos/ --output labels.jsonl        # a folder of images (or audio)
  appkit fine-tune text-classification --train train.csv --eval test.csv --out models/reviews
  appkit evaluate models/reviews test.csv --report report.html
  appkit serve models/reviews --port 8000                           # POST /predict, docs at /docs
  appkit export models/reviews --format onnx                        # writes models/reviews/onnx/

MODEL is a folder written by .save() (its appkit.json names the task), a catalogue name
(`appkit models`), or a task name (its default model); a hub id needs --task.
Results go to stdout as JSON lines unless --output names a .jsonl or .csv file; progress
and messages go to stderr.

exit codes:
  0  done
  1  unexpected error (a bug: run again with --debug and report the traceback)
  2  usage: a bad command line, an unknown task, model, option or label name
  3  data: the input or data files cannot be used as they are (the message says where)
  4  model: the model cannot be loaded, trained, exported or used as asked
  5  output: the output file or folder cannot be written
  130 interrupted (Ctrl-C)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_DATA, EXIT_MODEL, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
TABLE_INPUTS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
OUTPUT_FORMATS = (".jsonl", ".csv")


class UsageError(Exception):
    """A command-line mistake found by appkit after argparse (exit code 2)."""


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


# ---------------------------------------------------------------------- helpers
def _say(text: str) -> None:
    """Messages for the person at the terminal: stderr, so stdout stays machine-readable."""
    print(text, file=sys.stderr, flush=True)


def _model_task(spec: str, task: str | None) -> tuple[str, str | None]:
    """MODEL (folder | catalogue name | task name | hub id with --task) -> (task, model argument of appkit.load)."""
    import appkit
    from appkit.errors import unknown_name
    from appkit.registry import find_model
    from appkit.tasks.base import META_FILE

    path = Path(spec).expanduser()
    if path.is_dir():
        meta_file = path / META_FILE
        if meta_file.exists():
            saved = json.loads(meta_file.read_text()).get("task")
            if task and saved and task != saved:
                raise UsageError(f"--task {task} was given but the folder {spec!r} holds a {saved} model. "
                                 f"How to fix: drop --task, or pass the right folder.")
            return saved or task, str(path)
        if task is None:
            raise UsageError(f"The folder {spec!r} has no {META_FILE}, so its task is unknown. "
                             f"How to fix: pass --task, one of {appkit.list_tasks()}.")
        return task, str(path)
    if spec in appkit.list_tasks():
        return spec, None
    entry = find_model(spec)
    if entry is not None:
        return entry.task, spec
    if task is not None:          # a hub id (needs internet once)
        return task, spec
    names = list(appkit.list_models()["name"]) + appkit.list_tasks()
    raise unknown_name("model (a folder, catalogue name or task name; a hub id needs --task)", spec, names)


def _load(spec: str, *, task: str | None = None, labels: str | None = None, backend: str = "torch"):
    import appkit

    task, model = _model_task(spec, task)   # a wrong name fails here, before torch is imported
    names = [s.strip() for s in labels.split(",")] if labels else None
    _say(f"appkit: loading {model or 'the default model'} for {task} ...")
    import torch

    options = {"backend": backend} if backend != "torch" else {}
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():   # under torchrun: one GPU per process
        options["device"] = f"cuda:{os.environ['LOCAL_RANK']}"
    return appkit.load(task, model, labels=names, **options)


def _column_map(pairs: list[str] | None) -> dict | None:
    """--columns body=text -> {'body': 'text'} (the columns= of fine_tune / evaluate)."""
    if not pairs:
        return None
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--columns {p!r} is not YOUR_COLUMN=APPKIT_COLUMN. How to fix: e.g. --columns body=text")
        mine, theirs = p.split("=", 1)
        out[mine.strip()] = theirs.strip()
    return out


def _media_suffixes(task) -> set[str] | None:
    """File endings a folder input is read for (images or audio); None for text tasks."""
    if task.input_column == "image":
        from appkit.media import IMAGE_SUFFIXES

        return IMAGE_SUFFIXES
    if task.input_column == "audio":
        from appkit.media import AUDIO_SUFFIXES

        return AUDIO_SUFFIXES
    return None


def _read_inputs(task, inputs: list[str], column: str | None):
    """INPUT(s) -> (items to predict, the table they came from or None)."""
    from appkit.data import read_table
    from appkit.errors import DataError, _msg

    tables = [x for x in inputs if Path(x).suffix.lower() in TABLE_INPUTS and " " not in x]
    if tables and len(inputs) > 1:
        raise UsageError(f"Give one table file at a time (got {len(inputs)} inputs, {tables[0]!r} among them). "
                         "How to fix: run appkit predict once per file, or concatenate the tables.")
    for x in inputs:   # a mistyped file name must not be predicted on as if it were a text
        if Path(x).suffix.lower() in (*TABLE_INPUTS, ".txt") and " " not in x and not Path(x).exists():
            raise DataError(_msg(f"The input file {x!r} does not exist",
                                 fix="check the path (it is relative to the current folder)"))
    if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in TABLE_INPUTS and Path(inputs[0]).is_file():
        df = read_table(inputs[0], where="input")
        column = column or task.input_column
        if column not in df.columns:
            raise DataError(_msg(f"The input file {inputs[0]!r} has no column {column!r}",
                                 where=f"its columns are {list(df.columns)}",
                                 fix="pass --column <the column holding the inputs>"))
        return list(df[column]), df
    if column is not None:
        raise UsageError("--column is only used with a CSV/TSV/JSONL/Parquet input file. How to fix: drop --column.")
    return [item for inp in inputs for item in _expand_input(task, inp)], None


def _expand_input(task, inp: str) -> list:
    """One INPUT that is not a table -> its items: stdin lines (-), a folder's image / audio files, a .txt file's
    lines (text tasks), or the input itself (a text, or one image / audio file)."""
    from appkit.errors import DataError, _msg

    media = _media_suffixes(task)
    p = Path(inp)
    if inp == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if p.is_dir():
        if media is None:
            raise DataError(_msg(f"The input {inp!r} is a folder, which {task.task} cannot read",
                                 expected="a text, a .txt file (one text a line) or a CSV/JSONL file"))
        found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in media and f.is_file())
        if not found:
            raise DataError(_msg(f"The folder {inp!r} holds no {task.input_column} files",
                                 expected=f"files ending in one of {sorted(media)}"))
        return found
    if media is None and p.suffix.lower() == ".txt" and p.is_file():
        return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if media is not None and not p.exists():
        raise DataError(_msg(f"The input file {inp!r} does not exist",
                             fix="check the path (it is relative to the current folder)"))
    return [inp]


def _flat(result: dict | None, *, csv: bool) -> dict:
    """One result -> one output row; nested values (scores, chunks) become JSON text in a CSV."""
    if result is None:
        return {}
    return {k: (json.dumps(v, default=float) if csv and isinstance(v, (dict, list, tuple)) else v)
            for k, v in result.items()}


def _write(rows: list[dict], output: str | None) -> None:
    try:
        _write_rows(rows, output)
    except OSError as exc:
        raise _OutputError(f"Could not write {output!r}: {exc}") from None


def _write_rows(rows: list[dict], output: str | None) -> None:
    import pandas as pd

    if output is None:
        for r in rows:
            sys.stdout.write(json.dumps(r, default=str, ensure_ascii=False) + "\n")
        return
    suffix = Path(output).suffix.lower()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        pd.DataFrame(rows).to_csv(output, index=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=str, ensure_ascii=False) + "\n")
    _say(f"appkit: wrote {len(rows)} rows to {output}")


def _check_output(output: str | None, allowed=OUTPUT_FORMATS) -> None:
    if output is not None and Path(output).suffix.lower() not in allowed:
        raise UsageError(f"--output {output!r} must end in one of {list(allowed)}. How to fix: e.g. --output predictions.jsonl")


# ---------------------------------------------------------------------- commands
def cmd_models(args) -> int:
    import appkit

    for _, r in appkit.list_models(args.task).iterrows():
        print(f"{r['name']:24s} {r['task']:22s} offline={str(r['offline']):5s} {r['licence']:12s} {r['description']}")
    return EXIT_OK


def _predict_sharded(model, items: list, output: str, **options) -> list | None:
    """Under torchrun: rank r predicts items r, r+N, ... and writes a Parquet shard beside the output;
    rank 0 gathers the shards in input order once every rank is done (others get None)."""
    import pandas as pd
    import torch.distributed as dist

    from appkit.runtime import process_rank

    rank, world = process_rank()
    if not dist.is_initialized():
        dist.init_process_group("gloo")   # only a barrier crosses it: gloo works for CPU and GPU jobs alike
    mine = list(range(rank, len(items), world))
    results = model.predict([items[i] for i in mine], **options)
    shard = lambda r: Path(f"{output}.shard-{r}-of-{world}.parquet")   # noqa: E731
    pd.DataFrame({"index": mine, "result": [json.dumps(x, default=float) for x in results]},
                 columns=["index", "result"]).to_parquet(shard(rank))
    dist.barrier()
    if rank != 0:
        return None
    parts = pd.concat([pd.read_parquet(shard(r)) for r in range(world)]).set_index("index").sort_index()
    for r in range(world):
        shard(r).unlink()
    return [json.loads(x) for x in parts["result"]]


def cmd_predict(args) -> int:
    from appkit.runtime import process_rank

    _check_output(args.output)
    if process_rank()[1] > 1 and not args.output:
        raise UsageError("Under torchrun, appkit predict needs --output (each process writes a shard beside it, "
                         "gathered at the end). How to fix: add --output predictions.jsonl")
    model = _load(args.model, task=args.task, labels=args.labels, backend=args.backend)
    items, table = _read_inputs(model, args.inputs, args.column)
    options = {"top_k": args.top_k} if args.top_k else {}
    options.update(batch_size=args.batch_size, errors=args.errors, progress=True)
    if process_rank()[1] > 1:
        results = _predict_sharded(model, items, args.output, **options)
        if results is None:
            return EXIT_OK
    else:
        results = model.predict(items, **options)
    csv = bool(args.output) and args.output.lower().endswith(".csv")
    if table is not None:   # the table's own columns, then the predictions (pred_*, as DataFrame predict names them)
        rows = [{**rec, **{f"pred_{k}": v for k, v in _flat(res, csv=csv).items()}}
                for rec, res in zip(table.to_dict("records"), results)]
    else:
        rows = [{"input": item, **_flat(res, csv=csv)} for item, res in zip(items, results)]
    skipped = sum(r is None for r in results)
    reasons = getattr(results, "skipped", model.skipped)   # this call's (a gathered shard list has none: rank 0's)
    if skipped:
        _say(f"appkit: {skipped} of {len(items)} inputs were skipped (their rows have no prediction)"
             + (f"; first: {reasons[0][1]}" if reasons else ""))
    _write(rows, args.output)
    return EXIT_OK


def cmd_fine_tune(args) -> int:
    model = _load(args.model or args.task, task=args.task if args.model else None, labels=args.labels)
    if model.task != args.task:
        raise UsageError(f"--model {args.model!r} is a {model.task} model, not {args.task}. How to fix: pass a {args.task} model.")
    options = {k: v for k, v in {"epochs": args.epochs, "learning_rate": args.learning_rate,
                                 "batch_size": args.batch_size}.items() if v is not None}
    with contextlib.redirect_stdout(sys.stderr):   # the Trainer prints its log lines: stdout keeps only the result
        run = model.fine_tune(args.train, eval_data=args.eval, strategy=args.strategy, seed=args.seed,
                              columns=_column_map(args.columns), output_dir=args.runs, **options)
    try:
        folder = model.save(args.out)
    except OSError as exc:
        raise _OutputError(f"Could not write the model to {args.out!r}: {exc}") from None
    from appkit.runtime import process_rank

    if process_rank()[0] != 0:   # under torchrun every rank trained the same model; rank 0 saved and reports it
        return EXIT_OK
    _say(f"appkit: fine-tuned ({run.strategy}) in {run.seconds:.0f} s; saved to {folder}")
    print(json.dumps({"model": str(folder), "strategy": run.strategy, "seconds": round(run.seconds, 1),
                      "eval_metrics": run.metrics}, default=float))
    return EXIT_OK


def cmd_evaluate(args) -> int:
    _check_output(args.report, allowed=(".html",))
    model = _load(args.model, task=args.task, backend=args.backend)
    report = model.evaluate(args.data, columns=_column_map(args.columns), slice_by=args.slice_by,
                            batch_size=args.batch_size, progress=True)
    if args.report:
        try:
            html = report.to_html(args.report)
        except OSError as exc:
            raise _OutputError(f"Could not write the report to {args.report!r}: {exc}") from None
        _say(f"appkit: report written to {html}")
    print(json.dumps(report.metrics, default=float))
    return EXIT_OK


def cmd_serve(args) -> int:
    from appkit.serve import ServeConfig, serve

    model = _load(args.model, task=args.task, labels=args.labels, backend=args.backend)
    cfg = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                      max_request_bytes=int(args.max_request_mb * 1024 * 1024), max_items=args.max_items)
    serve(model, host=args.host, port=args.port, config=cfg)
    return EXIT_OK


def cmd_export(args) -> int:
    if args.format != "onnx":
        raise UsageError(f"--format {args.format!r} is not supported. Available: ['onnx'].")
    task, source = _model_task(args.model, args.task)
    out = args.output
    if out is None:
        if source is None or not Path(source).is_dir():
            raise UsageError(f"{args.model!r} is not a model folder, so there is no default place for the export. "
                             "How to fix: pass --output DIR")
        out = str(Path(source) / "onnx")
    model = _load(args.model, task=args.task)
    check = model.export_onnx(out)
    _say(f"appkit: exported to {out}: onnxruntime vs torch max abs difference {check['max_abs_diff']:.2e}, "
         f"labels agree on {check['labels_agree']:.0%} of {check['checked']} check inputs")
    print(json.dumps({"folder": out, **check}, default=float))
    return EXIT_OK


class _OutputError(Exception):
    """The output could not be written (exit code 5)."""


# ---------------------------------------------------------------------- parser
# long: one declaration per command and option, read top to bottom like the --help it prints; pieces would scatter it
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    ap = argparse.ArgumentParser(prog="appkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    def add(name, help_, epilog):
        return sub.add_parser(name, help=help_, description=help_, epilog="examples:\n" + epilog,
                              formatter_class=fmt, parents=[common])

    add("tasks", "list the tasks", "  appkit tasks")
    m = add("models", "list the catalogue models and whether each is installed here",
            "  appkit models\n  appkit models --task image-classification")
    m.add_argument("--task", help="only this task's models")

    model_help = "a folder written by .save(), a catalogue name, or a task name (its default model)"
    p = add("predict", "predict texts, a text/CSV/JSONL file, or a folder of images or audio",
            '  appkit predict text-classification "great product" --labels negative,positive\n'
            "  appkit predict models/reviews reviews.csv --column body --output predictions.csv\n"
            "  appkit predict models/reviews texts.txt              # one text a line\n"
            "  appkit predict image-classification photos/ --top-k 3 --output photos.jsonl\n"
            "  appkit predict speech-recognition calls/ --output transcripts.csv\n"
            "  cat texts.txt | appkit predict models/reviews -")
    p.add_argument("model", help=model_help)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="texts, .txt files, one CSV/TSV/JSONL/Parquet file, image/audio files or folders, or - (stdin lines)")
    p.add_argument("--output", "-o", help="write .jsonl or .csv here (default: JSON lines on stdout)")
    p.add_argument("--column", help="the column of a table input that holds the inputs (default: the task's, e.g. text)")
    p.add_argument("--task", help="the task, when MODEL is a hub id or a folder without appkit.json")
    p.add_argument("--labels", help="comma-separated class names (zero-shot text classification)")
    p.add_argument("--top-k", type=int, help="classifiers: keep only the k best scores")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--errors", choices=["raise", "skip"], default="raise",
                   help="skip: a bad input gets an empty row instead of stopping everything")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: predict through the model's exported onnx/model.onnx with onnxruntime")

    f = add("fine-tune", "fine-tune a model on labelled data and save it",
            "  appkit fine-tune text-classification --train train.csv --eval test.csv --out models/reviews\n"
            "  appkit fine-tune text-classification --train tickets.jsonl --columns body=text --out models/tickets\n"
            "  appkit fine-tune image-classification --train photos/ --out models/photos   # sub-folders are labels\n"
            "  torchrun --nproc_per_node=2 -m appkit.cli fine-tune text-classification --train train.csv --out m/")
    f.add_argument("task", help="the task, e.g. text-classification (see `appkit tasks`)")
    f.add_argument("--train", required=True, help="a CSV/TSV/JSONL/Parquet file, or a folder (images: sub-folders are labels)")
    f.add_argument("--eval", help="held-out data of the same form: validation metrics each epoch")
    f.add_argument("--out", required=True, help="the folder to save the fine-tuned model in")
    f.add_argument("--model", help="start from this model (folder, catalogue name or hub id) instead of the default")
    f.add_argument("--labels", help="comma-separated class names, fixing their order")
    f.add_argument("--columns", nargs="+", metavar="YOURS=APPKITS", help="rename columns, e.g. body=text")
    f.add_argument("--strategy", default="auto", help="auto (default), head, probe (text), top or full")
    f.add_argument("--epochs", type=float)
    f.add_argument("--learning-rate", type=float)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--runs", help="where checkpoints go (default: runs/...)")

    e = add("evaluate", "evaluate a model on labelled data; optionally write the HTML report",
            "  appkit evaluate models/reviews test.csv --report report.html\n"
            "  appkit evaluate models/calls calls.csv --slice-by speaker")
    e.add_argument("model", help=model_help)
    e.add_argument("data", help="a CSV/TSV/JSONL/Parquet file or a folder, with inputs and references")
    e.add_argument("--report", help="write the self-contained HTML report here")
    e.add_argument("--columns", nargs="+", metavar="YOURS=APPKITS", help="rename columns, e.g. body=text")
    e.add_argument("--slice-by", nargs="+", help="columns to break the metrics down by")
    e.add_argument("--task", help="the task, when MODEL is a hub id or a folder without appkit.json")
    e.add_argument("--batch-size", type=int)
    e.add_argument("--backend", choices=["torch", "onnx"], default="torch")

    s = add("serve", "serve a model over HTTP (POST /predict, GET /health, GET /model, docs at /docs)",
            "  appkit serve models/reviews --port 8000\n"
            "  curl -s localhost:8000/predict -H 'content-type: application/json' -d '{\"inputs\": [\"great\"]}'\n"
            "  curl -s localhost:8000/predict -F file=@photo.jpg          # images and audio: upload the file")
    s.add_argument("model", help=model_help)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--task", help="the task, when MODEL is a hub id or a folder without appkit.json")
    s.add_argument("--labels", help="comma-separated class names (zero-shot text classification)")
    s.add_argument("--max-batch", type=int, default=32, help="most inputs in one model call (1: no batching)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to share its batch")
    s.add_argument("--max-queue", type=int, default=256, help="most requests held at once; more get 503")
    s.add_argument("--max-request-mb", type=float, default=16.0, help="larger request bodies get 413")
    s.add_argument("--max-items", type=int, default=256, help="most inputs in one request; more get 413")
    s.add_argument("--backend", choices=["torch", "onnx"], default="torch")

    x = add("export", "export a classifier for onnxruntime, checked against torch",
            "  appkit export models/reviews --format onnx                  # -> models/reviews/onnx/\n"
            "  appkit export image-classification --format onnx --output lite0-onnx/")
    x.add_argument("model", help=model_help)
    x.add_argument("--format", default="onnx", help="onnx (the only format so far)")
    x.add_argument("--output", help="the folder to write (default: onnx/ inside the model folder)")
    x.add_argument("--task", help="the task, when MODEL is a hub id or a folder without appkit.json")

    d = add("demo", "fine-tune and evaluate a text classifier on real data, write an HTML report", "  appkit demo --out reports")
    d.add_argument("--out", default="reports")
    d.add_argument("--strategy", default="auto")
    return ap


def cmd_tasks(args) -> int:
    import appkit

    print("\n".join(appkit.list_tasks()))
    return EXIT_OK


COMMANDS = {"tasks": cmd_tasks, "models": cmd_models, "predict": cmd_predict, "fine-tune": cmd_fine_tune,
            "evaluate": cmd_evaluate, "serve": cmd_serve, "export": cmd_export,
            "demo": lambda args: _demo(args.out, args.strategy)}


def _exit_code(exc: BaseException) -> int:
    from appkit.errors import DataError, ModelError, NotTrainedError

    if isinstance(exc, DataError):
        return EXIT_DATA
    if isinstance(exc, (ModelError, NotTrainedError)):
        return EXIT_MODEL
    return EXIT_USAGE   # UnknownNameError and the rest: a name or option the user can correct


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """appkit's warnings (skipped rows, duplicates) as one readable line each, without source lines."""
    _say(f"appkit: warning: {' '.join(str(message).split())}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    with warnings.catch_warnings():   # restores showwarning afterwards (main may run inside a notebook or test)
        warnings.showwarning = _show_warning
        return _dispatch(args)


def _dispatch(args) -> int:
    from appkit.errors import AppkitError

    try:
        return COMMANDS[args.cmd](args)
    except (AppkitError, UsageError, _OutputError) as exc:   # user mistakes: the message, not a traceback
        if args.debug:
            raise
        code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_OUTPUT if isinstance(exc, _OutputError) else _exit_code(exc)
        _say(f"appkit: error: {' '.join(str(exc).split())}")
        return code
    except KeyboardInterrupt:
        _say("appkit: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:   # a bug: one line by default, the traceback with --debug
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _say(f"appkit: unexpected error: {type(exc).__name__}: {first} "
             "(run again with --debug for the traceback, and please report it)")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
