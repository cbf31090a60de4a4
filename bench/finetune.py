"""Fine-tuning on CPU: every strategy appkit offers vs full fine-tuning, on text, image and speech.

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

The peer is full fine-tuning (every weight trained by transformers' Trainer), run through appkit's "full"
strategy at its defaults (text: lr 5e-5, batch 16, 3 epochs, linear schedule, as Trainer's examples; image
lr 1e-4 with light augmentation; speech lr 1e-5), in float32 (Trainer's default precision) and, where the
CPU has native bf16 and the task allows it, in bf16 (Trainer's best documented CPU setting). A full
fine-tune takes minutes on 2 cores, so it is timed in --full-rounds rounds (default 3) one after another
after its warm-up, not interleaved with the cheap strategies (they get --rounds, >= 3, interleaved). Round r
of every side trains with seed r and is scored on the test rows; a side's quality is the mean over its rounds
and the range is printed: on drug reviews full bf16 scored accuracy 0.726 / 0.720 / 0.723 with seeds 0 / 1 / 2,
so one seed cannot set the bar to within the 2 points the comparison asks about.

The cheap strategies, at their defaults: "head" (the frozen model's features computed once, then only the
classification head, or Whisper's decoder, trained), for text "probe" (every layer's mean-pooled vector computed
once, then a logistic regression whose layer, C and class weighting 5-fold CV chooses: text's default on a CPU)
and "top": for images the features below the last block
computed once, then the last block, the 1x1 head convolution and the classifier trained; for text the token
states entering the last pretrained layer computed once, then that layer and the head trained. Each timed
round starts from a freshly loaded model and an empty feature cache, so computing the features is timed.
Loading the model is not timed (the same for every side). `tune` rows: 10 optuna trials of the default
strategy trained in epochs (head), timed once, to show that trials reuse the cached features.

Data (the same for every side of a task):
  text    drug reviews (Drugs.com, CC BY 4.0): 600 train / 379 test; accuracy and macro-F1
  image   clip art products (Open Clip Art, public domain): 240 train / 80 test, 8 classes
  speech  drug-name sentences spoken by flite (synthetic): 30 train / the held-out sentences that name the
          same drugs; WER (lower is better)

Also printed: the majority-class baseline of each classification task (always the commonest training label).
Replaces bench/text_finetune.py (text head vs full float32 / bf16 are the first rows here).

    python bench/finetune.py [--tasks text,image,speech] [--rounds 3] [--full-rounds 3] [--no-tune]
                             [--train-rows N] [--max-length 256]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from _fair import MIN_ROUNDS, interleaved, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@dataclass
class Side:
    name: str
    strategy: str
    precision: str          # appkit.load precision
    settings: str           # printed beside the figure
    numerics: str
    seconds: float = float("nan")
    rounds: int = 0
    quality: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Case:
    task: str
    load: dict              # appkit.load keywords
    train: object
    test: object
    warm: object
    metrics: tuple          # names from EvalReport.metrics
    lower_is_better: bool
    sides: list


def _settings(task_cls, strategy: str) -> str:
    d = task_cls.training
    return f"{d.epochs[strategy]:g} ep, lr {d.learning_rate[strategy]:g}, batch {d.batch_size[strategy]}"


def text_case(bf16: bool, train_rows: int | None, max_length: int) -> Case:
    from appkit.samples import drug_reviews
    from appkit.tasks.text_classification import TextClassification as T

    train, test = drug_reviews("train").head(train_rows), drug_reviews("test")
    from appkit.training import PROBE_C, PROBE_FOLDS

    sides = [Side("head", "head", "auto", _settings(T, "head"), "bf16 features, float32 head" if bf16 else "float32"),
             Side("probe", "probe", "auto", f"{PROBE_FOLDS}-fold CV: 6 layers x {len(PROBE_C)} C x 2 weightings",
                  "bf16 features, float64 fit" if bf16 else "float32 features, float64 fit"),
             Side("top", "top", "auto", _settings(T, "top") + ", head lr x30",
                  "bf16 token states, last layer + head in bf16 autocast" if bf16 else "float32"),
             Side("full float32", "full", "float32", _settings(T, "full"), "float32")]
    if bf16:
        sides.append(Side("full bf16", "full", "auto", _settings(T, "full"), "bf16 (Trainer bf16=True)"))
    return Case("text-classification", {"max_length": max_length}, train, test, train.groupby("label").head(4),
                ("accuracy", "macro_f1"), False, sides)


def image_case() -> Case:
    from appkit.samples import clipart_products
    from appkit.tasks.image_classification import ImageClassification as T

    train, test = clipart_products("train"), clipart_products("test")
    sides = [Side(s, s, "auto", _settings(T, s), "float32") for s in T.strategies]
    for s in sides:
        if s.strategy == "full":
            s.name, s.settings = "full float32", s.settings + ", augmented"
    return Case("image-classification", {}, train, test, train.groupby("label").head(2),
                ("accuracy", "macro_f1"), False, sides)


def speech_case(bf16: bool) -> Case:
    from appkit.samples import speech as samples
    from appkit.tasks.speech_recognition import SpeechRecognition as T

    speech = samples.drug_name_speech(80, seed=0)            # each drug twice, in different sentences
    first, second = speech.iloc[:40], speech.iloc[40:]
    drugs = list(first.term[:30])
    train = first[first.term.isin(drugs)].reset_index(drop=True)
    test = second[second.term.isin(drugs)].reset_index(drop=True)   # other sentences, the same drugs
    assert not set(train.text) & set(test.text)
    sides = [Side("head (decoder)", "head", "auto", _settings(T, "head"),
                  "bf16 encoder features, decoder trained under bf16 autocast" if bf16 else "float32"),
             Side("full float32", "full", "float32", _settings(T, "full"), "float32")]
    if bf16:
        sides.append(Side("full bf16", "full", "auto", _settings(T, "full"), "bf16 (Trainer bf16=True)"))
    return Case("speech-recognition", {}, train, test, train.head(4), ("wer",), True, sides)


LOADS: dict[str, list] = {}


def fit(case: Case, side: Side, data, seed: int = 0):
    import appkit

    clf = appkit.load(case.task, precision=side.precision, **case.load)
    out = tempfile.mkdtemp(prefix=f"bench-ft-{side.strategy}-")
    try:
        t = time.perf_counter()
        run = clf.fine_tune(data, strategy=side.strategy, output_dir=out, progress=False, checkpoints=False,
                            seed=seed)
        seconds = time.perf_counter() - t
        LOADS.setdefault(side.name, []).append(os.getloadavg()[0])   # a shared machine shows here
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return clf, run, seconds


def score(case: Case, clf) -> dict:
    m = clf.evaluate(case.test, progress=False).metrics
    return {k: float(m[k]) for k in case.metrics}


def measure(case: Case, *, rounds: int, full_rounds: int) -> None:
    """Round r of every side trains with seed r (the data order, dropout, a new head's start, the probe's CV
    folds), and each round's model is scored on the test rows: a side's quality is the mean over its rounds,
    so one lucky or unlucky seed of full fine-tuning does not set the bar (the range is printed beside it)."""
    cheap = [s for s in case.sides if s.strategy != "full"]
    full = [s for s in case.sides if s.strategy == "full"]
    runs, scores = {}, {}
    if cheap:
        fitted: dict[str, list] = {}

        def timed(s):
            clf, run, secs = fit(case, s, case.train, seed=len(fitted.get(s.name, [])))
            fitted.setdefault(s.name, []).append(secs)   # fine_tune's own wall time, not the model load
            scores.setdefault(s.name, []).append(score(case, clf))    # after the clock stopped
            runs[s.name] = run

        configs = {s.name: (lambda s=s: timed(s)) for s in cheap}
        warmups = {s.name: (lambda s=s: fit(case, s, case.warm)) for s in cheap}
        if rounds >= MIN_ROUNDS:
            interleaved(configs, rounds=rounds, warmups=warmups)
        else:   # only with --why: the output says why the rule is not kept
            for name in configs:
                warmups[name]()
                configs[name]()
                print(f"  round 1/1 {name}: {fitted[name][-1]:.1f} s", flush=True)
        for s in cheap:
            s.seconds, s.rounds = statistics.median(fitted[s.name][-rounds:]), rounds
    for s in full:
        fit(case, s, case.warm)                                                   # warm-up
        times = []
        for r in range(full_rounds):
            clf, run, secs = fit(case, s, case.train, seed=r)
            times.append(secs)
            scores.setdefault(s.name, []).append(score(case, clf))
            runs[s.name] = run
            print(f"  round {r + 1}/{full_rounds} {s.name} (seed {r}): {secs:.1f} s, {scores[s.name][-1]}", flush=True)
        s.seconds, s.rounds = statistics.median(times), full_rounds
    for s in case.sides:
        each = scores[s.name][-s.rounds:]
        s.quality = {k: statistics.mean(q[k] for q in each) for k in case.metrics}
        s.note = f"load {max(LOADS.get(s.name, [float('nan')])):.1f}"
        if len(each) > 1:
            s.note += f", seeds 0-{len(each) - 1}: " + ", ".join(
                f"{k} {min(q[k] for q in each):.3f}-{max(q[k] for q in each):.3f}" for k in case.metrics)
        if runs[s.name].best_epoch is not None:
            s.note += f", best epoch {runs[s.name].best_epoch:g}"


def measure_tune(case: Case, n_trials: int) -> Side:
    """tune() on the first trained-in-epochs strategy (head): the features are computed once, the trials reuse
    them. (Strategy "probe" searches its own settings by cross-validation inside every fine_tune: its row.)"""
    import appkit

    default = next(s for s in case.sides if s.strategy != "probe")
    clf = appkit.load(case.task, precision=default.precision, **case.load)
    t = time.perf_counter()
    result = clf.tune(case.train, n_trials=n_trials, strategy=default.strategy)
    secs = time.perf_counter() - t
    side = Side(f"tune {n_trials} trials", default.strategy, default.precision, f"optuna TPE, {n_trials} trials",
                default.numerics, seconds=secs, rounds=1)
    clf.fine_tune(case.train, strategy=default.strategy, progress=False, checkpoints=False,
                  output_dir=tempfile.mkdtemp(prefix="bench-ft-tuned-"), **result.best_params)
    m = clf.evaluate(case.test, progress=False).metrics
    side.quality = {k: float(m[k]) for k in case.metrics}
    side.note = "then fine_tune(**best_params); " + ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.best_params.items())
    return side


def table(cases: list[Case]) -> str:
    lines = [f"{'task':<21}{'strategy':<18}{'settings':<28}{'precision':<38}{'seconds':>8}{'rnds':>5}"
             f"{'x faster':>9}  {'quality (vs full float32, points)':<44}note"]
    for case in cases:
        ref = next((s for s in case.sides if s.name == "full float32"), None)
        for s in case.sides:
            speed = ref.seconds / s.seconds if ref and s.seconds == s.seconds else float("nan")
            q = []
            for k, v in s.quality.items():
                delta = (v - ref.quality[k]) * 100 if ref and k in ref.quality else float("nan")
                q.append(f"{k} {v:.3f} ({delta:+.1f})" if s is not ref else f"{k} {v:.3f}")
            lines.append(f"{case.task:<21}{s.name:<18}{s.settings:<28}{s.numerics:<38}{s.seconds:>8.1f}{s.rounds:>5}"
                         f"{speed:>9.1f}  {', '.join(q):<44}{s.note}")
    return "\n".join(lines)


def majority(case: Case) -> str:
    from sklearn.metrics import accuracy_score, f1_score

    top = case.train["label"].value_counts().index[0]
    y, guess = list(case.test["label"]), [top] * len(case.test)
    return (f"majority-class baseline (always {top!r}): accuracy {accuracy_score(y, guess):.3f}, "
            f"macro-F1 {f1_score(y, guess, average='macro'):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="text,image,speech")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of the cheap strategies (>= 3)")
    ap.add_argument("--full-rounds", type=int, default=3, help="timed rounds (seeds) of full fine-tuning (minutes each)")
    ap.add_argument("--no-tune", action="store_true", help="skip the tune() rows")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--skip-full", action="store_true", help="only the cheap strategies (full figures elsewhere)")
    ap.add_argument("--why", default="", help="printed reason for --rounds below 3 or --skip-full")
    ap.add_argument("--train-rows", type=int, default=None, help="text: the first N of the 600 training reviews")
    ap.add_argument("--max-length", type=int, default=256, help="text: tokens per review")
    args = ap.parse_args()
    if args.rounds < MIN_ROUNDS and not args.why:
        raise SystemExit(f"--rounds {args.rounds}: the fairness rule asks for the median of at least {MIN_ROUNDS}; "
                         "say --why '...' to print the reason a run breaks it")
    warnings.simplefilter("ignore")
    import torch

    from appkit.runtime import bf16_native

    bf16 = bf16_native("cpu")
    builders: dict[str, Callable[[], Case]] = {"text": lambda: text_case(bf16, args.train_rows, args.max_length), "image": image_case,
                                               "speech": lambda: speech_case(bf16)}
    print(f"CPU threads {torch.get_num_threads()}, native bf16: {bf16}; cheap strategies: median of {args.rounds} "
          f"interleaved rounds; full fine-tuning: {args.full_rounds} round(s), seeds 0-{args.full_rounds - 1}, "
          "one after another" + (" (fewer than the rule's 3: its quality is one seed's)"
                                 if args.full_rounds < MIN_ROUNDS else ""), flush=True)
    if args.why:
        print(f"NOT the fairness rule's conditions (--rounds {args.rounds}"
              f"{', full fine-tuning skipped' if args.skip_full else ''}): {args.why}", flush=True)
    cases = []
    for name in args.tasks.split(","):
        case = builders[name]()
        if args.skip_full:
            case.sides = [s for s in case.sides if s.strategy != "full"]
        print(f"\n== {case.task}: {len(case.train)} train, {len(case.test)} test", flush=True)
        measure(case, rounds=args.rounds, full_rounds=args.full_rounds)
        if not args.no_tune and case.task != "speech-recognition":   # tune's default space is for classifiers
            case.sides.append(measure_tune(case, args.trials))
        cases.append(case)
        print(table([case]), flush=True)
        if "accuracy" in case.metrics:
            print(majority(case), flush=True)
    print("\nAll tasks (x faster = full float32 seconds / this side's seconds; quality in brackets: the difference "
          "to full float32 in points, WER lower is better; load: the highest 1-minute load average seen after a "
          "run of that side, 2.0 = both cores busy):")
    print(table(cases))
    for case in cases:
        if "accuracy" in case.metrics:
            print(f"{case.task}: {majority(case)}")
    # a run of some tasks only records beside the whole run's file, not over it
    names = args.tasks.split(",")
    whole = set(names) == {"text", "image", "speech"}
    record("finetune" if whole else "finetune_" + "_".join(names), [row for case in cases for row in _headline(case)])


def _headline(case: Case) -> list[dict]:
    """bench/table.py's rows: each cheap strategy against full fine-tuning in float32 (Trainer's default) and,
    where it ran, in bf16 (its best documented CPU setting): the fairness rule's two peers."""
    done = [s for s in case.sides if s.seconds == s.seconds]
    peers = [s for s in done if s.name in ("full float32", "full bf16")]
    rows = []
    for s in (s for s in done if s.strategy != "full"):
        for ref in peers:
            quality = ", ".join(f"{k} {v:.3f} vs {ref.quality.get(k, float('nan')):.3f}" for k, v in s.quality.items())
            rows.append({"task": f"fine-tune {case.task} ({len(case.train)} rows)", "appkit": f"{s.name} ({s.settings})",
                         "peer": f"{ref.name.replace('full', 'full fine-tuning')} ({ref.settings})",
                         "appkit_s": round(s.seconds, 1), "peer_s": round(ref.seconds, 1), "quality": quality,
                         "memory": "", "notes": f"{s.rounds} vs {ref.rounds} timed rounds (seeds 0-{s.rounds - 1} vs "
                                                 f"0-{ref.rounds - 1}), quality their mean"})
    return rows


if __name__ == "__main__":
    main()
