"""The one fine-tune engine, on transformers' Trainer.

Trainer gives checkpoints, resume, early stopping, mixed precision, progress bars
(terminal and notebook) and DDP under torchrun / accelerate launch. appkit adds
the "head" strategy (features from the frozen model computed once, then only a
small head is trained: minutes on a laptop CPU), class weights, and a history
DataFrame.

The task side is declared in appkit/tasks/base.py (``Trains``, ``TrainsHead``, ``TrainsTop``): a
task's ``training`` defaults (epochs, learning rate, batch size per strategy; the metric that picks
the epoch kept; the cached strategy "auto" prefers), ``_prepare_targets``, ``_preprocess`` (as in
predict), ``_train_collate``, ``_step_loss``, ``_class_weights``; for strategy "head" ``_features``,
``_head``, ``_head_collate``; for "top" ``_top_features``, ``_top``. The engine keeps its own feature
cache (``feature_cache(task)``).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import shutil
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .data import data_fingerprint
from .errors import AppkitError, DataError, _msg, unknown_name, warn
from .folders import atomic_write_bytes
from .runtime import process_rank, quiet_transformers


@dataclass
class TrainConfig:
    epochs: float | None = None
    strategy: str = "auto"
    seed: int = 0
    learning_rate: float | None = None
    batch_size: int | None = None
    weight_decay: float = 0.01
    class_weights: str | None = "auto"
    early_stopping_patience: int | None = None
    validation_split: float | None = None   # None: auto (see _auto_validation_split)
    output_dir: str | os.PathLike | None = None
    resume: bool = False
    progress: bool = True
    checkpoints: bool = True   # off for tuning trials: nothing to resume there, and saving costs time
    callbacks: list = field(default_factory=list)   # the user's transformers TrainerCallbacks


@dataclass
class TrainingRun:
    """What fine_tune did: ``history`` (one row per logged step), final ``metrics``, where checkpoints are."""
    history: pd.DataFrame
    strategy: str
    params: dict
    metrics: dict
    output_dir: Path
    seconds: float
    interrupted: bool = False
    resumed_from_step: int | None = None
    notes: list = field(default_factory=list)   # what the engine chose and why, in plain words
    best_epoch: float | None = None             # the epoch whose weights the model kept
    calibration: dict = field(default_factory=dict)  # temperature, calibration error before / after

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        h = self.history
        if self.strategy == "probe" and "cv_macro_f1" in h:   # no epochs: the cross-validation's choice instead
            chosen = h[h["class_weights"] == self.params["class_weights"]]
            for c, d in chosen.groupby("C"):
                ax.plot(d["layer"], d["cv_macro_f1"], "o-", label=f"C={c:g}")
            ax.axvline(self.params["layer"], color="grey", ls=":", label="chosen layer")
            ax.set_xlabel("pretrained layer the linear model reads")
            ax.set_ylabel("cross-validated macro-F1")
            ax.legend(fontsize="small")
            ax.set_title("Fine-tuning (probe): which layer separates the labels best")
            return ax
        if "train_loss" in h and h["train_loss"].notna().any():
            d = h.dropna(subset=["train_loss"])
            ax.plot(d["epoch"], d["train_loss"], label="training loss")
        if "eval_loss" in h and h["eval_loss"].notna().any():
            d = h.dropna(subset=["eval_loss"])
            ax.plot(d["epoch"], d["eval_loss"], "o-", label="validation loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
        ax.set_title(f"Fine-tuning ({self.strategy})")
        return ax

    def _repr_html_(self) -> str:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items() if isinstance(v, float))
        state = " (interrupted: resume with resume=True)" if self.interrupted else ""
        import html

        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<b>Fine-tuning run</b>{state}: strategy <code>{self.strategy}</code>, {self.seconds:.0f} s"
                f"{', ' + metrics if metrics else ''}" + (f"<ul>{notes}</ul>" if notes else "<br>")
                + (f"The search's best {min(len(self.history), _SHOWN)} of {len(self.history)} candidates (all in "
                   "<code>.history</code>):<br>" if self.strategy == "probe" else "")
                + _shown_rows(self.history).to_html(index=False, float_format="%.4f"))


@dataclass
class TuneResult:
    """optuna's trials as a table and the best settings, ready for ``fine_tune(train, **best_params)``."""
    trials: pd.DataFrame
    best_params: dict
    best_value: float
    metric: str
    strategy: str
    extra: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        import html

        from .evaluation import Metrics   # prints its floats rounded; the values in best_params stay exact
        if not self.best_params and self.extra:
            return (f"<b>Hyperparameter search</b> (strategy <code>{self.strategy}</code>): cross-validation chose "
                    f"<code>{html.escape(repr(Metrics(self.extra)))}</code>, {self.metric} {self.best_value:.4f}; "
                    "<code>fine_tune(train)</code> makes the same choice on the same rows. The best "
                    f"{min(len(self.trials), _SHOWN)} of {len(self.trials)} candidates (all in <code>.trials</code>):<br>"
                    + _shown_rows(self.trials).to_html(index=False, float_format="%.4g"))
        return (f"<b>Hyperparameter search</b>: best {self.metric} {self.best_value:.4f} with "
                f"<code>{html.escape(repr(Metrics(self.best_params)))}</code><br>"
                + self.trials.to_html(index=False, float_format="%.4g"))


_SHOWN = 8   # rows of a probe's cross-validation table shown in a notebook (the best ones)


def _shown_rows(table: pd.DataFrame) -> pd.DataFrame:
    """What a notebook shows of a history or search table: a probe's best candidates, else the last rows."""
    if "cv_score" in table and table["cv_score"].notna().any():
        return table.sort_values("cv_score", ascending=False, kind="stable").head(_SHOWN)
    return table.tail(10)


def resolve_strategy(task, strategy: str, rows: int | None = None, loop_settings=()) -> str:
    return _choose_strategy(task, strategy, rows, loop_settings)[0]


# Strategies that train on features the frozen part of the model computes once: strategy -> the task's
# hooks (features of a batch, the trainable module that maps them to the output)
_CACHED = {"head": ("_features", "_head"), "top": ("_top_features", "_top")}
# Strategies that keep the pretrained model frozen: the cached ones, and "probe" (a linear model on one of its
# layers, chosen by cross-validation, fitted in seconds on features computed once: see ``_probe_run``)
_FROZEN = (*_CACHED, "probe")
# "auto" trains every weight only on a GPU with at least this many training rows. Below it the cached
# strategy was as good or better on every benchmark (bench/finetune.py: 600 drug reviews, 240 clip-art
# images, 30 spoken sentences), so full fine-tuning would cost more for nothing; on a CPU it costs 10-20x.
AUTO_FULL_MIN_ROWS = 1000


def _choose_strategy(task, strategy: str, rows: int | None = None, loop_settings=()) -> tuple[str, str]:
    """The strategy to run and, for "auto", why it was picked (shown in the run and the model card).
    ``loop_settings``: what the caller set that only a strategy trained in epochs uses (epochs, learning rate,
    ...): "auto" then does not pick "probe", which would ignore them."""
    if strategy not in ("auto", *task.strategies):
        raise unknown_name("strategy", strategy, ["auto", *task.strategies])
    if strategy != "auto":
        return strategy, f"strategy {strategy!r}, as asked"
    cheap = task.training.auto_strategy
    cheap = cheap if cheap in task.strategies else next((s for s in task.strategies if s in _FROZEN), None)
    if cheap == "probe" and loop_settings:
        cheap = next((s for s in task.strategies if s in _CACHED), None)
        if cheap is not None:
            return cheap, (f"strategy {cheap!r} (auto: you set {', '.join(loop_settings)}, which only a strategy "
                           "trained in epochs uses; without them, auto fits the cross-validated 'probe')")
    if cheap is None:
        return "full", f"strategy 'full' (auto: the only strategy {type(task.model).__name__} offers here)"
    what = ("the pretrained model stays frozen, its features are computed once and only the "
            + ("last block and the classification layers are" if cheap == "top" else "classification layers are")
            + " trained")
    if cheap == "probe":
        what = ("the pretrained model stays frozen, each of its layers' sentence vectors is computed once, and a "
                "linear model is fitted on the layer that cross-validation on the training rows finds best")
    if task.device == "cpu":
        return cheap, f"strategy {cheap!r} (auto: no GPU, so {what}; training every weight would take 10-20x longer)"
    if rows is not None and rows < AUTO_FULL_MIN_ROWS:
        return cheap, (f"strategy {cheap!r} (auto: {rows} training rows, fewer than {AUTO_FULL_MIN_ROWS}: {what}; "
                       "on so few rows training every weight measured no better)")
    return "full", (f"strategy 'full' (auto: on {task.device} with "
                    + (f"{rows} training rows" if rows is not None else "a GPU") + " every weight is trained)")


# A validation split is taken by default only where it is cheap and the data can spare it:
# the head strategy of a classifier, with enough rows that every class keeps examples on both sides.
_AUTO_VALIDATION = 0.2
_AUTO_VALIDATION_MIN_ROWS = 100
# Held-out rows per class, at least: fewer pick the epoch by noise and cost the training side more than the best
# epoch gains. Measured (clip art, 4 folds of 320, head lr 1e-3): 6 per class held out -> accuracy 0.628 /
# macro-F1 0.617, every row trained on for 30 epochs -> 0.659 / 0.651 (each fold better); drug reviews (11
# neutral held out) gained from the split: macro-F1 0.486 vs 0.442 for the last epoch of full fine-tuning.
_AUTO_VALIDATION_MIN_PER_CLASS = 10


def _auto_validation_split(task, train_df: pd.DataFrame, strategy: str) -> float:
    if strategy not in _CACHED or not getattr(task, "is_classifier", False) or len(train_df) < _AUTO_VALIDATION_MIN_ROWS:
        return 0.0
    counts = train_df[task.target_column].astype(str).value_counts()
    return _AUTO_VALIDATION if counts.min() * _AUTO_VALIDATION >= _AUTO_VALIDATION_MIN_PER_CLASS else 0.0


def _split_validation(task, train_df: pd.DataFrame, fraction: float, seed: int):
    from .data import train_test_split

    strat = task.target_column if getattr(task, "is_classifier", False) else None
    return train_test_split(train_df, test_size=fraction, seed=seed, stratify=strat)


def fine_tune(task, train_df: pd.DataFrame, eval_df: pd.DataFrame | None, cfg: TrainConfig) -> TrainingRun:
    """One training run: plan it (strategy, epochs, validation rows), build the data and Trainer, train, keep the
    best epoch and calibrate (``_after_training``), and record what was done in ``task.meta["training"]``."""
    from transformers import set_seed

    strategy, cfg, train_df, eval_df, notes = _plan_run(task, train_df, eval_df, cfg)
    set_seed(cfg.seed)   # before _prepare_targets: a head it resets is initialised from the run's seed
    train_y, eval_y = task._prepare_targets(train_df, eval_df)
    train_units = _preprocess_all(task, train_df, "training data")
    eval_units = _preprocess_all(task, eval_df, "evaluation data") if eval_df is not None else None
    set_seed(cfg.seed)
    weights = task._class_weights(train_y, balance=cfg.class_weights) if cfg.class_weights else None
    out_dir, cache_dir = _run_dirs(task, cfg, strategy, train_df)
    if strategy == "probe":
        return _probe_run(task, cfg, notes, (train_units, train_y, train_df), (eval_units, eval_y, eval_df), cache_dir)
    model, train_ds, eval_ds, collate = _datasets(task, strategy, cache_dir, (train_units, train_y, train_df),
                                                  (eval_units, eval_y, eval_df), notes)
    lr = cfg.learning_rate or task.training.learning_rate[strategy]
    bs = cfg.batch_size or task.training.batch_size[strategy]
    keep_best = (_KeepBest(task.training.best_metric, cfg.early_stopping_patience, out_dir if cfg.checkpoints else None)
                 if eval_ds is not None else None)
    trainer = _build_trainer(task, model, train_ds, eval_ds, collate, cfg, strategy, out_dir, lr, bs, weights,
                             [keep_best] if keep_best else [])
    resume_from = _last_checkpoint(out_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        warn(f"resume=True but no checkpoint was found in {out_dir}; training from the start.")
    started = time.perf_counter()
    interrupted = _train(task, trainer, resume_from, out_dir)
    history = _history(trainer.state.log_history)
    best_epoch, metrics, calibration = (None, {}, {}) if interrupted else _after_training(
        task, trainer, keep_best, eval_ds, cfg, notes)
    seconds = time.perf_counter() - started
    task.meta["training"] = {"strategy": strategy, "epochs": cfg.epochs, "learning_rate": lr, "batch_size": bs,
                             "seed": cfg.seed, "data_fingerprint": data_fingerprint(task, train_df), "rows": len(train_df),
                             "validation_rows": len(eval_df) if eval_df is not None else 0, "best_epoch": best_epoch,
                             "calibration": calibration, "class_weights": cfg.class_weights, "notes": notes,
                             "eval_metrics": metrics, "seconds": round(seconds, 1)}
    return TrainingRun(history=history, strategy=strategy, metrics=metrics,
                       output_dir=out_dir, seconds=seconds, interrupted=interrupted,
                       params={"learning_rate": lr, "batch_size": bs, "epochs": cfg.epochs, "weight_decay": cfg.weight_decay},
                       resumed_from_step=int(Path(resume_from).name.split("-")[-1]) if resume_from else None,
                       notes=notes, best_epoch=best_epoch, calibration=calibration)


def _plan_run(task, train_df: pd.DataFrame, eval_df: pd.DataFrame | None, cfg: TrainConfig):
    """(strategy, cfg with its epochs, train rows, validation rows or None, notes): the strategy and why, the
    checked options, and the validation rows held out of the training data where asked (or by default)."""
    strategy, why = _choose_strategy(task, cfg.strategy, len(train_df), _loop_settings(cfg))
    cfg = dataclasses.replace(cfg, strategy=strategy)
    notes = [why]
    if strategy == "probe":
        _check_probe_config(cfg)
    elif cfg.epochs is None:
        cfg = dataclasses.replace(cfg, epochs=task.training.epochs[strategy])
    _check_config(cfg)
    split = cfg.validation_split
    if split is None:   # "probe" cross-validates on every training row instead of holding some out
        split = _auto_validation_split(task, train_df, strategy) if eval_df is None and strategy != "probe" else 0.0
    if eval_df is None and split:
        n_all = len(train_df)
        train_df, eval_df = _split_validation(task, train_df, split, cfg.seed)
        notes.append(f"held out {len(eval_df)} of the {n_all} training rows ({split:.0%}, stratified, seed {cfg.seed}) "
                     "to pick the best epoch and calibrate the confidence scores")
    if cfg.early_stopping_patience and eval_df is None:
        raise DataError(_msg("early_stopping_patience needs validation data",
                             fix="pass eval_data=... or validation_split=0.1"))
    return strategy, cfg, train_df, eval_df, notes


def _datasets(task, strategy: str, cache_dir: Path, train: tuple, evaluation: tuple, notes: list):
    """(model to train, train dataset, eval dataset or None, collator). ``train`` / ``evaluation``: (units,
    targets, rows). A cached strategy trains a small module on features the frozen model computes once (a
    packing of the rows into fewer examples is said in ``notes``)."""
    (train_units, train_y, train_df), (eval_units, eval_y, eval_df) = train, evaluation
    if strategy not in _CACHED:
        eval_ds = _PairDataset(eval_units, eval_y) if eval_units else None
        return task.model, _PairDataset(train_units, train_y), eval_ds, _FullCollator(task)
    features, head = (getattr(task, hook) for hook in _CACHED[strategy])
    model = _HeadModel(head())      # first: a new head draws its initial weights from the run's seeded RNG
    rows = len(train_units)
    train_units, train_y = task._cached_examples(train_units, train_y)
    if len(train_units) < rows:
        notes.append(f"packed the {rows} training rows into {len(train_units)} examples the way predict packs them, "
                     "so the frozen model ran once per example; the batch size still counts rows")
    examples = task._head_examples if strategy == "head" else (lambda feats: feats)
    train_ds = _PairDataset(examples(_cached_features(task, features, train_units, train_df, cache_dir, "train",
                                                      strategy)), train_y, rows=rows)
    if eval_units:
        eval_units, eval_y = task._cached_examples(eval_units, eval_y)
    eval_ds = (_PairDataset(examples(_cached_features(task, features, eval_units, eval_df, cache_dir, "eval", strategy)),
                            eval_y) if eval_units else None)
    return model, train_ds, eval_ds, task._head_collate


def _train(task, trainer, resume_from: str | None, out_dir: Path) -> bool:
    """Run the Trainer; True when the user interrupted it (the model keeps the weights it had then)."""
    import torch

    task.model.train()
    try:
        with quiet_transformers(progress_bars=True):   # its notices are not the user's business
            trainer.train(resume_from_checkpoint=resume_from)
    except KeyboardInterrupt:
        _save_interrupted(trainer)
        warn(
            f"Training was interrupted at step {trainer.state.global_step}. The model keeps the weights it had then; "
            f"checkpoints are in {out_dir}. Run fine_tune(..., resume=True) with the same data to continue.")
        return True
    finally:
        task.model.eval()
        torch.set_grad_enabled(True)
    return False


def _after_training(task, trainer, keep_best, eval_ds, cfg: TrainConfig, notes: list) -> tuple:
    """(best epoch, validation metrics, calibration) of a finished run: the best epoch's weights restored and
    the scores calibrated on the validation data, each noted in ``notes``."""
    metrics, calibration, best_epoch = {}, {}, None
    if keep_best is not None:
        best_epoch = keep_best.restore(trainer.model)
        if best_epoch is not None:
            notes.append(f"kept the weights of epoch {best_epoch:g} of {cfg.epochs:g}, the best on the validation data "
                         f"({keep_best.metric.removeprefix('eval_')} {keep_best.best:.3f})")
    if eval_ds is not None:
        metrics, calibration = _final_evaluation(task, trainer, eval_ds)
        if calibration:
            notes.append(f"calibrated the confidence scores on the validation data: temperature "
                         f"{calibration['temperature']:.2f}, calibration error {calibration['error_before']:.3f} -> "
                         f"{calibration['error_after']:.3f}")
    return best_epoch, metrics, calibration


_CLASS_WEIGHTS = ("auto", "balanced", None)


# ---------------------------------------------------------------------- strategy "probe"
# The regularisation strengths cross-validation chooses from (C of an L2 logistic regression, as scikit-learn
# names it: smaller is stronger). Measured with bench/text_probe.py: drug reviews and ICD-10-CM chapters both
# chose 0.03 there (sklearn); the drug reviews with "auto" class weights reach down to 0.003, ICD-10 up to 0.1.
PROBE_C = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
PROBE_FOLDS = 5


def _loop_settings(cfg: TrainConfig) -> list[str]:
    """The settings the caller gave that only a strategy trained in epochs uses."""
    return ([n for n in ("epochs", "learning_rate", "batch_size") if getattr(cfg, n) is not None]
            + [n for n in ("early_stopping_patience", "callbacks") if getattr(cfg, n)])


def _check_probe_config(cfg: TrainConfig) -> None:
    given = _loop_settings(cfg)
    if given:
        warn(f"strategy 'probe' fits a linear model (no training loop), so {', '.join(given)} "
             f"{'does' if len(given) == 1 else 'do'} not apply and {'was' if len(given) == 1 else 'were'} ignored; "
             "its layer and regularisation are chosen by cross-validation (pass strategy='head' to train with them).")


def _probe_run(task, cfg: TrainConfig, notes: list, train: tuple, evaluation: tuple, cache_dir: Path) -> TrainingRun:
    """Strategy "probe": features of every pretrained layer computed once (``task._probe_features``: [layers,
    width] per example), then an L2 logistic regression on one layer's standardised features; the layer, the
    regularisation and (for class_weights="auto") the class weighting are chosen by stratified 5-fold
    cross-validation on the training rows (score: accuracy + macro-F1), the winner refitted on all of them,
    its scores calibrated on the out-of-fold logits, and written into the model (``task._apply_probe``)."""
    import numpy as np

    (train_units, train_y, train_df), (eval_units, eval_y, eval_df) = train, evaluation
    started = time.perf_counter()
    task._restore_layers()     # a model an earlier probe cut short gets its pretrained layers back first
    x = _cached_features(task, task._probe_features, train_units, train_df, cache_dir, "train", "probe")
    y = np.asarray(train_y)
    balances = {"auto": (None, "auto"), "balanced": ("balanced",), None: (None,)}[cfg.class_weights]
    search = probe_search(x, y, len(task.labels), transform=task._probe_inputs, seed=cfg.seed,
                          weightings={b: task._class_weights(list(y), balance=b) if b else None for b in balances})
    best = search["best"]
    t = fit_temperature(search["oof_logits"], y) if search["oof_logits"] is not None else 1.0
    shift, scale, coef, bias = best["shift"], best["scale"], best["coef"] / t, best["bias"] / t
    task._apply_probe(best["layer"], shift, scale, coef, bias)
    if eval_units:
        xe = _cached_features(task, task._probe_features, eval_units, eval_df, cache_dir, "eval", "probe")
        z = task._probe_inputs((xe[:, best["layer"] - 1].double() - shift) / scale)
        held_out = ((z @ coef.T + bias).numpy(), np.asarray(eval_y), "the validation data")
    else:
        held_out = None
    metrics, calibration = _probe_outcome(task, search, y, t, held_out, notes, layers=x.shape[1])
    seconds = time.perf_counter() - started
    params = {"layer": best["layer"], "C": best["C"], "class_weights": best["class_weights"] or "none"}
    task.meta["training"] = {"strategy": "probe", **params, "seed": cfg.seed,
                             "data_fingerprint": data_fingerprint(task, train_df), "rows": len(train_df),
                             "validation_rows": len(eval_df) if eval_df is not None else 0, "calibration": calibration,
                             "notes": notes, "eval_metrics": metrics, "seconds": round(seconds, 1)}
    return TrainingRun(history=search["table"], strategy="probe", params=params, metrics=metrics,
                       output_dir=cache_dir, seconds=seconds, notes=notes, calibration=calibration)


def _probe_outcome(task, search: dict, y, t: float, held_out: tuple | None, notes: list, *, layers: int):
    """(metrics, calibration) of a fitted probe, with notes on what was chosen: metrics on the validation data
    (``held_out``: logits, targets, where) when there is some, else the cross-validation's held-out predictions."""
    best, oof, calibration, metrics = search["best"], search["oof_logits"], {}, {}
    if held_out is None and oof is not None:
        held_out = (oof / t, y, f"{search['folds']}-fold cross-validation")
    if held_out is not None:
        logits, labels, where = held_out
        metrics = {**task._trainer_metrics(logits, labels), "calibration_error": _ece_of(logits, labels, 1.0)}
    if oof is not None:
        calibration = {"temperature": round(t, 4), "error_before": round(_ece_of(oof, y, 1.0), 4),
                       "error_after": round(_ece_of(oof, y, t), 4), "rows": int(len(y))}
        notes.append(f"chose layer {best['layer']} of {layers}, regularisation C={best['C']:g} and class weights "
                     f"{best['class_weights'] or 'none'} by {search['folds']}-fold cross-validation on the {len(y)} "
                     f"training rows (accuracy + macro-F1 {best['score']:.3f}), then refitted on all of them")
        notes.append(f"calibrated the confidence scores on the cross-validation's held-out predictions: temperature "
                     f"{t:.2f}, calibration error {calibration['error_before']:.3f} -> {calibration['error_after']:.3f}")
    else:
        notes.append(f"too few rows per class to cross-validate: took layer {best['layer']} of {layers} and "
                     f"C={best['C']:g}")
    if metrics:
        notes.append(f"metrics above: {where}")
    return metrics, calibration


def _stratified_folds(y, k: int, seed: int):
    """Fold number per row: each class's rows shuffled and dealt round the folds in turn."""
    import numpy as np

    rng, fold, start = np.random.default_rng(seed), np.empty(len(y), dtype=int), 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return fold


def fit_logistic(u, y, n_classes: int, c: float, sample_weight=None, init=None, max_iter: int = 100):
    """L2-regularised multinomial logistic regression: scikit-learn's objective (C * the weighted losses summed +
    |W|^2 / 2, bias not penalised) divided by C * rows, minimised with L-BFGS. ``u``: [..., rows, width], a batch
    of independent problems over the same ``y`` ([rows]); ``sample_weight`` [..., rows] or [rows] (0 leaves a row
    out of that problem). Returns [..., width + 1, classes] (the last row is the bias). The gradient is written
    out (X^T (softmax - onehot)), not taken by autograd: the probe's search makes ~4,000 small evaluations, and
    autograd's bookkeeping was a fifth of the search (drug reviews: 6.7 -> 5.3 s per search)."""
    import torch

    *batch, n, d = u.shape
    # rows last (input [problems, classes, rows]): 3.4x faster than [rows, width] @ [width, classes] for few classes
    ut = torch.cat([u, torch.ones(*batch, n, 1, dtype=u.dtype)], -1).transpose(-1, -2).reshape(-1, d + 1, n).contiguous()
    onehot = torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.long), n_classes).T.to(u.dtype)   # [classes, rows]
    sw = torch.ones(n, dtype=u.dtype) if sample_weight is None else torch.as_tensor(sample_weight, dtype=u.dtype)
    sw = sw.expand(*batch, n).reshape(-1, n)
    rows = (sw > 0).sum(-1).clamp(min=1).to(u.dtype)
    per_row = (sw / rows[:, None]).unsqueeze(1)                                      # [problems, 1, rows]
    penalty = (1 / (c * rows))[:, None, None]
    theta = torch.zeros(*batch, d + 1, n_classes, dtype=u.dtype) if init is None else init.clone()
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-5,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        flat = theta.reshape(-1, d + 1, n_classes)
        logp = (flat.transpose(1, 2) @ ut).log_softmax(1)                            # [problems, classes, rows]
        w = flat[:, :-1]
        loss = -(logp * onehot * per_row).sum() + (w.pow(2) * penalty).sum() / 2
        grad = ut @ ((logp.exp() - onehot) * per_row).transpose(1, 2)                 # [problems, width + 1, classes]
        grad[:, :-1] += w * penalty
        theta.grad = grad.reshape(theta.shape)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return theta


def _probe_cv(x, y, n_classes: int, *, k: int, transform, weightings: dict, weights, seed: int, c_grid, table: list):
    """Every (layer, C, weighting) candidate's out-of-fold predictions; appends one row per candidate to ``table``
    and returns the best (row, weighting name, out-of-fold logits)."""
    import torch

    from .metrics import classification

    classes, best = list(range(n_classes)), None
    fold = torch.as_tensor(_stratified_folds(y, k, seed))
    keep = (fold[None, :] != torch.arange(k)[:, None]).float()          # [folds, rows]: 1 = a training row
    held = 1 - keep
    for layer in range(1, x.shape[1] + 1):
        feats = x[:, layer - 1]
        shift = keep @ feats / keep.sum(1, keepdim=True)                  # [folds, width], training rows only
        var = keep @ feats.pow(2) / keep.sum(1, keepdim=True) - shift.pow(2)
        scale = (var * keep.sum(1, keepdim=True) / (keep.sum(1, keepdim=True) - 1)).clamp(min=1e-12).sqrt()
        u = transform((feats[None] - shift[:, None]) / scale[:, None])   # [folds, rows, width]
        for name in weightings:
            w = weights(name)
            sw = keep if w is None else keep * w
            theta = None
            for c in sorted(c_grid):
                theta = fit_logistic(u, y, n_classes, c, sw, init=theta)
                logits = u @ theta[:, :-1] + theta[:, -1:]                # [folds, rows, classes]
                oof = (logits * held[..., None]).sum(0).double().numpy()
                m = classification(list(y), list(oof.argmax(1)), classes)
                row = {"step": 0, "layer": layer, "C": c, "class_weights": name or "none",
                       "cv_accuracy": m["accuracy"], "cv_macro_f1": m["macro_f1"],
                       "cv_score": m["accuracy"] + m["macro_f1"]}
                table.append(row)
                if best is None or row["cv_score"] > best[0]["cv_score"]:
                    best = (row, name, oof)
    return best


def probe_search(x, y, n_classes: int, *, transform, weightings: dict, seed: int, c_grid=PROBE_C,
                 folds: int = PROBE_FOLDS) -> dict:
    """Cross-validated choice of (layer, C, class weighting) for strategy "probe". ``x``: [rows, layers, width];
    ``transform``: the task's map from standardised features to what its head's last linear layer reads;
    ``weightings``: name -> per-class weights (or None). Each layer's folds are fitted as one batch of problems,
    along C from the strongest regularisation (each fit starting from the last). Returns the best candidate
    refitted on every row (``shift``/``scale`` of the standardisation, ``coef`` [classes, width], ``bias``), its
    out-of-fold logits (None when a class has fewer than 2 rows: then no CV, the middle layer and C=0.03) and the
    table of every candidate (the run's history)."""
    import numpy as np
    import torch

    x = (torch.stack(x) if isinstance(x, list) else torch.as_tensor(x)).float()
    y = np.asarray(y)
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(folds, counts[counts > 0].min()))

    def weights(name):
        w = weightings[name]
        return None if w is None else torch.as_tensor(np.asarray(w)[y], dtype=torch.float32)

    table = []
    if k >= 2:
        best = _probe_cv(x, y, n_classes, k=k, transform=transform, weightings=weightings, weights=weights,
                         seed=seed, c_grid=c_grid, table=table)
        row, name, oof = best
        layer, c = row["layer"], row["C"]
    else:
        name, oof = next(iter(weightings)), None
        layer, c = (x.shape[1] + 1) // 2, 0.03
        row = {"step": 0, "layer": layer, "C": c, "class_weights": name or "none"}
        table.append(row)
    feats = x[:, layer - 1].double()
    shift, scale = feats.mean(0), feats.std(0).clamp(min=1e-6)
    w = weights(name)
    theta = fit_logistic(transform((feats - shift) / scale), y, n_classes, c, None if w is None else w.double(),
                         max_iter=500)
    table = pd.DataFrame(table).sort_values(["class_weights", "C", "layer"], kind="stable").reset_index(drop=True)
    table["step"] = np.arange(1, len(table) + 1)
    return {"best": {"layer": layer, "C": c, "class_weights": name, "score": row.get("cv_score", float("nan")),
                     "shift": shift, "scale": scale, "coef": theta[:-1].T.contiguous(), "bias": theta[-1].clone()},
            "oof_logits": oof, "folds": k, "table": table}


class _KeepBestLogic:
    """Keeps the weights of the epoch that scored best on the validation data (in memory, and with
    checkpoints also in the run folder, so a run killed and resumed keeps the same best epoch), and stops
    after ``patience`` epochs without improvement. ``_KeepBest`` makes it a TrainerCallback."""

    def __init__(self, metric: str, patience: int | None, save_dir: Path | None = None):
        self.metric, self.patience, self.save_dir = metric, patience, save_dir
        self.best, self.best_epoch, self.state, self.waited = None, None, None, 0

    def _better(self, value) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.metric.endswith("loss") else value > self.best

    def on_train_begin(self, args, state, control, **kw):
        if self.save_dir is None or not state.global_step:   # a fresh run: nothing to carry over
            return
        import json

        from safetensors.torch import load_file

        try:   # resumed: the best epoch before the interruption still counts
            info = json.loads((self.save_dir / _BEST_INFO).read_text())
            if info["step"] <= state.global_step:
                self.state = load_file(str(self.save_dir / _BEST_WEIGHTS))
                self.best, self.best_epoch, self.waited = info["value"], info["epoch"], info["waited"]
        except (OSError, ValueError, KeyError):
            pass

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        value = (metrics or {}).get(self.metric)
        if value is None or model is None or value != value:
            return
        if self._better(value):
            self.best, self.best_epoch, self.waited = value, round(state.epoch or 0, 2), 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._persist(state.global_step)
        else:
            self.waited += 1
            if self.patience and self.waited >= self.patience:
                control.should_training_stop = True

    def _persist(self, step: int) -> None:
        if self.save_dir is None or process_rank()[0] != 0:
            return
        import json

        from safetensors.torch import save_file

        self.save_dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.state.items()}
        atomic_write_bytes(self.save_dir / _BEST_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
        (self.save_dir / _BEST_INFO).write_text(json.dumps(
            {"value": self.best, "epoch": self.best_epoch, "step": step, "waited": self.waited}))

    def restore(self, model):
        if self.state is None:
            return None
        model.load_state_dict(self.state)
        self.state = None   # free the copy
        return self.best_epoch


def _KeepBest(metric: str, patience: int | None, save_dir: Path | None = None):
    """A ``_KeepBestLogic`` that is a transformers TrainerCallback (the class is made on first use: import cost)."""
    return _callback_class(_KeepBestLogic)(metric, patience, save_dir)


class _CheckpointBudgetLogic:
    """Keeps the time spent writing checkpoints to about ``share`` of the training time: an epoch's checkpoint
    is skipped while less than (its last writing time / ``share``) has passed since the last one was written.
    The first epoch's and the last one's (early stopping's too) are always written; epochs longer than that are each
    checkpointed, as before. A run killed in between resumes from the last one written (losing at most ten
    times one write of training); one interrupted from the keyboard writes one where it stopped either way.
    Short epochs are where it counts: Whisper's decoder on 30 clips (8 epochs of 1.3 s) spent 2.2 s of 17 s
    writing a checkpoint (0.28 s: the decoder and its optimizer state) after every epoch."""

    def __init__(self, share: float = 0.1):
        self.share, self.cost, self.written, self.since = share, None, None, None

    def on_epoch_end(self, args, state, control, **kw):
        last = state.max_steps and state.global_step >= state.max_steps
        if control.should_save and self.cost is not None and not last:
            control.should_save = time.monotonic() - self.written >= self.cost / self.share
        self.since = time.monotonic()

    def on_evaluate(self, args, state, control, **kw):
        self.since = time.monotonic()     # the checkpoint is written after the epoch's evaluation
        if control.should_training_stop:  # early stopping made this epoch the last one
            control.should_save = True

    def on_save(self, args, state, control, **kw):
        self.written = time.monotonic()
        self.cost = self.written - (self.since or self.written)


def _CheckpointBudget(share: float = 0.1):
    return _callback_class(_CheckpointBudgetLogic)(share)


def _checkpoint_budget(cfg: TrainConfig) -> list:
    """The run's checkpoint budget callback, if it writes checkpoints on one process (under DDP every rank must
    agree on each save and their clocks differ: there every epoch is checkpointed)."""
    return [_CheckpointBudget()] if cfg.checkpoints and process_rank()[1] == 1 else []


@functools.cache
def _callback_class(logic: type) -> type:
    from transformers import TrainerCallback

    return type(logic.__name__.removeprefix("_").removesuffix("Logic"), (logic, TrainerCallback), {})


_BEST_WEIGHTS, _BEST_INFO = "appkit-best-epoch.safetensors", "appkit-best-epoch.json"


def _final_evaluation(task, trainer, eval_ds) -> tuple[dict, dict]:
    """Metrics of the kept weights on the validation data; for classifiers also a temperature that makes
    the confidence scores honest (class weights and many epochs make a head overconfident), folded into
    the final layer so the saved folder gives the calibrated scores in a plain pipeline too."""
    out = trainer.predict(eval_ds)
    metrics = {k.removeprefix("eval_").removeprefix("test_"): v for k, v in (out.metrics or {}).items()
               if not k.endswith(("runtime", "per_second", "samples_per_second", "steps_per_second"))}
    if not getattr(task, "is_classifier", False) or out.predictions is None:
        return metrics, {}
    import numpy as np

    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    labels = np.asarray(out.label_ids)
    t = fit_temperature(logits, labels)
    before, after = _ece_of(logits, labels, 1.0), _ece_of(logits, labels, t)
    task._scale_logits(1.0 / t)
    metrics["calibration_error"] = after
    return metrics, {"temperature": round(t, 4), "error_before": round(before, 4), "error_after": round(after, 4),
                     "rows": int(len(labels))}


def fit_temperature(logits, labels) -> float:
    """The temperature T minimising the cross-entropy of softmax(logits / T) (Guo et al., 2017)."""
    import torch

    import numpy as np

    z = torch.tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and 0.05 < t < 100 else 1.0


def _ece_of(logits, labels, t: float) -> float:
    import numpy as np
    from scipy.special import softmax

    from .metrics import expected_calibration_error

    p = softmax(np.asarray(logits, dtype=np.float64) / t, axis=-1)
    return expected_calibration_error(p.max(-1), p.argmax(-1) == np.asarray(labels))


def _check_config(cfg: TrainConfig) -> None:
    """Options are checked before anything is touched (Trainer would fail later, with its own words)."""
    def number(name, value, *, low, integer=False, high=None, allow_none=False, example):
        if value is None and allow_none:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
            and (not integer or float(value).is_integer()) and value > low and (high is None or value < high)
        if not ok:
            bound = f"more than {low}" + (f" and less than {high}" if high is not None else "")
            raise DataError(_msg(f"{name}={value!r} is not a valid setting",
                                 expected=f"{'a whole number' if integer else 'a number'} {bound}", fix=f"e.g. {name}={example}"))

    number("epochs", cfg.epochs, low=0, allow_none=cfg.strategy == "probe", example=3)
    number("learning_rate", cfg.learning_rate, low=0, allow_none=True, example=5e-5)
    number("batch_size", cfg.batch_size, low=0, integer=True, allow_none=True, example=16)
    number("weight_decay", cfg.weight_decay, low=-1e-12, example=0.01)
    number("validation_split", cfg.validation_split, low=-1e-12, high=1, allow_none=True, example=0.2)
    if cfg.early_stopping_patience != 0:   # 0, like None, means no early stopping
        number("early_stopping_patience", cfg.early_stopping_patience, low=0, integer=True, allow_none=True, example=2)
    if cfg.class_weights not in _CLASS_WEIGHTS:
        raise unknown_name("class_weights", cfg.class_weights, _CLASS_WEIGHTS)


def _run_dirs(task, cfg: TrainConfig, strategy: str, train_df: pd.DataFrame) -> tuple[Path, Path]:
    """(checkpoint folder, feature-cache folder). By default each run gets its own folder under
    runs/<task>-<strategy>-<data fingerprint>/ (two notebooks training at once never share one);
    resume=True continues the newest run there that has a complete checkpoint."""
    if cfg.output_dir:
        return Path(cfg.output_dir), Path(cfg.output_dir)
    group = Path("runs") / f"{task.task}-{strategy}-{data_fingerprint(task, train_df)}"
    if cfg.resume and group.is_dir():
        runs = [(_complete_checkpoints(d)[-1:], d) for d in group.iterdir() if d.is_dir()]
        runs = [(Path(c[0]).stat().st_mtime, d) for c, d in runs if c]
        if runs:
            return max(runs)[1], group
    import uuid

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # torchrun / accelerate: every rank must name the same folder
        job = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        return group / f"run-ddp-{job if job != 'none' else ''}{os.environ.get('MASTER_PORT', '')}", group
    return group / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}", group


def _preprocess_all(task, df: pd.DataFrame, where: str) -> list:
    """Every example is decoded and checked before any training starts."""
    return [task._preprocess(x, where=f"row {i} of the {where}") for i, x in enumerate(df[task.input_column])]


class _PairDataset:
    """(input, target) pairs; ``rows``: the training rows they hold (more than pairs where a task packs several
    rows into one example, see ``_cached_examples``), so that a batch size counts rows."""

    def __init__(self, xs, ys, rows: int | None = None):
        self.xs, self.ys = xs, ys
        self.rows = len(ys) if rows is None else rows

    def __len__(self):
        return len(self.ys)

    def __getitem__(self, i):
        return self.xs[i], self.ys[i]


class _FullCollator:
    def __init__(self, task):
        self.task = task
        self.train = True

    def __call__(self, pairs):
        units, ys = zip(*pairs)
        return self.task._train_collate(list(units), list(ys), train=self.train)


class _HeadModel:
    """Built lazily as an nn.Module subclass so importing appkit.training stays light."""

    def __new__(cls, head):
        import torch

        class HeadModel(torch.nn.Module):
            def __init__(self, head):
                super().__init__()
                self.head = head

            def forward(self, features, labels=None):
                return {"logits": self.head(features)}

        return HeadModel(head)


# The engine's feature cache: per task object, (weights, data) key -> features. Weakly keyed, so it goes with the task.
_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_cache(task) -> dict:
    """The features fine_tune computed for this task, by (weights, data) key (kept while the task lives)."""
    return _FEATURES.setdefault(task, {})


def _cached_features(task, features, units: list, df: pd.DataFrame, out_dir: Path, split: str, strategy: str):
    """Frozen-model features, computed once per (model, strategy, data) and kept in memory and on disk."""
    import torch
    from safetensors.torch import load_file, save_file

    from .widgets.progress import bar   # no tqdm widget in a notebook (ipywidgets imported only in a kernel)

    import hashlib

    model_key = hashlib.sha256(task._model_key().encode()).hexdigest()[:12]
    # the count: rows a task packs into shared examples (speech) never meet features cached per row
    key = f"{model_key}-{strategy}-{len(units)}-{data_fingerprint(task, df[[task.input_column]])}"
    cache = feature_cache(task)
    if key in cache:
        return cache[key]
    path = out_dir / f"features-{split}-{key}.safetensors"
    if path.exists():
        feats = _unpack_features(load_file(str(path)))
    else:
        order = sorted(range(len(units)), key=lambda i: -task._length(units[i]))
        bs = task.default_batch_size
        chunks: dict[int, torch.Tensor] = {}
        task.model.eval()
        with torch.inference_mode(), task._autocast():
            for k in bar(range(0, len(order), bs), desc=f"features ({split})", unit="batch"):
                idx = order[k:k + bs]
                out = features(task._to_device(task._collate([units[i] for i in idx])))
                # per-example tensors (a list: text token states, padding dropped) are copied out of the batch
                rows = [r.clone() for r in out] if isinstance(out, list) else out
                for j, i in enumerate(idx):
                    f = rows[j].cpu()
                    # bf16 features (bf16 inference copies of Whisper or MiniLM) stay bf16: lossless, half the memory
                    chunks[i] = f if f.dtype == torch.bfloat16 else f.float()
        feats = [chunks[i] for i in range(len(units))]
        feats = torch.stack(feats) if len({f.shape for f in feats}) == 1 else feats
        if process_rank()[0] == 0:   # under DDP every rank computes the same features; one writes them
            out_dir.mkdir(parents=True, exist_ok=True)
            # written beside and renamed: a run killed mid-write never leaves a file a later run would trust
            atomic_write_bytes(path, lambda tmp: save_file(_pack_features(feats), str(tmp)))
    cache[key] = feats
    return feats


def _pack_features(feats) -> dict:
    """Features as safetensors holds them: one tensor, or for per-example tensors of different lengths (text
    token states) their concatenation and the lengths."""
    import torch

    if isinstance(feats, torch.Tensor):
        return {"features": feats.contiguous()}
    return {"features": torch.cat(feats).contiguous(), "lengths": torch.tensor([len(f) for f in feats])}


def _unpack_features(saved: dict):
    if "lengths" not in saved:
        return saved["features"]
    return list(saved["features"].split(saved["lengths"].tolist()))


def _build_trainer(task, model, train_ds, eval_ds, collate, cfg: TrainConfig, strategy: str, out_dir: Path,
                   lr: float, bs: int, weights, callbacks: list):
    import torch
    from transformers import Trainer, TrainingArguments

    bs = max(1, round(bs * len(train_ds) / train_ds.rows))      # the batch size counts rows, not packed examples
    steps_per_epoch = max(1, math.ceil(len(train_ds) / (bs * process_rank()[1])))   # DDP: each rank takes bs
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=cfg.epochs, learning_rate=lr, per_device_train_batch_size=bs,
        per_device_eval_batch_size=max(bs, 32), weight_decay=cfg.weight_decay, warmup_steps=int(0.06 * steps_per_epoch * cfg.epochs),
        lr_scheduler_type="linear", seed=cfg.seed, data_seed=cfg.seed,
        eval_strategy="epoch" if eval_ds is not None else "no",
        # the best epoch is kept in memory by _KeepBest (also without checkpoints), not by reloading one
        save_strategy="epoch" if cfg.checkpoints else "no", save_total_limit=2, save_only_model=False,
        logging_strategy="steps", logging_steps=max(1, steps_per_epoch // 4), logging_first_step=True,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=task.device == "cpu", bf16=(strategy in ("full", "top") and task._use_bf16()),
        disable_tqdm=not cfg.progress, label_names=["labels"],
    )
    callbacks = [*callbacks, *_checkpoint_budget(cfg), *cfg.callbacks]
    weight_t = torch.tensor(weights, dtype=torch.float32) if weights is not None else None

    class AppkitTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = task._step_loss(model, dict(inputs), weight_t)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, *a, **kw):
            optimizer = super().create_optimizer(*a, **kw)
            _scale_head_lr(optimizer, self.model)
            return optimizer

    def metrics_fn(ev):
        return task._trainer_metrics(ev.predictions, ev.label_ids)

    trainer = AppkitTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collate,
                            compute_metrics=metrics_fn if task.training.logit_metrics else None, callbacks=callbacks)
    _use_appkit_progress(trainer, task, cfg)
    return trainer


def _scale_head_lr(optimizer, model) -> None:
    """A trained module may ask for a faster learning rate for its new head than for the pretrained layers below
    it (``head_lr_scale``, on a module with a ``head``): its parameters then get their own optimizer groups."""
    module = getattr(model, "head", None)
    scale = getattr(module, "head_lr_scale", None)
    if not scale or getattr(module, "head", None) is None:
        return
    fast = {id(p) for p in module.head.parameters()}
    groups = list(optimizer.param_groups)
    optimizer.param_groups.clear()
    for group in groups:
        for is_head in (False, True):
            params = [p for p in group["params"] if (id(p) in fast) == is_head]
            if params:
                optimizer.add_param_group({**group, "params": params, "lr": group["lr"] * (scale if is_head else 1)})


def _use_appkit_progress(trainer, task, cfg: TrainConfig) -> None:
    """Trainer's own bars and raw log dicts give way to appkit's display: a live widget in a notebook,
    one bar and a line per epoch in a terminal (appkit.widgets.progress imports ipywidgets only in a kernel)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for cb in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(cb)
    if cfg.progress:
        from .widgets.progress import progress_callback

        trainer.add_callback(progress_callback(metric=task.training.best_metric.removeprefix("eval_")))


def _complete_checkpoints(out_dir: Path) -> list[str]:
    """Checkpoints by step whose trainer_state.json (Trainer writes it last) is there and whole."""
    import json

    found = []
    for d in out_dir.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-")[-1])
            json.loads((d / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        found.append((step, str(d)))
    return [d for _, d in sorted(found)]


def _last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint; newer half-written ones (the process died while saving) are removed."""
    if not out_dir.is_dir():
        return None
    complete = _complete_checkpoints(out_dir)
    last = complete[-1] if complete else None
    last_step = int(Path(last).name.split("-")[-1]) if last else -1
    for d in out_dir.glob("checkpoint-*"):
        if str(d) not in complete and d.name.split("-")[-1].isdigit() and int(d.name.split("-")[-1]) > last_step:
            warnings.warn(f"{d} was only half written when its run stopped; it is removed and training resumes "
                          f"from {Path(last).name if last else 'the start'}.", UserWarning, stacklevel=4)
            shutil.rmtree(d, ignore_errors=True)
    return last


def _save_interrupted(trainer) -> None:
    try:  # best effort: a checkpoint at the interruption point, so resume loses nothing
        trainer._save_checkpoint(trainer.model, trial=None)
    except Exception:
        pass


def _history(log_history: list[dict]) -> pd.DataFrame:
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = entry.get("step", 0)
        row = rows.setdefault(step, {"step": step})
        for k, v in entry.items():
            if k in ("step", "total_flos") or k.endswith(("runtime", "per_second")):
                continue
            if k == "loss":
                k = "train_loss"
            elif k == "train_loss":
                k = "mean_train_loss"
            row[k] = v
    cols = ["step", "epoch", "train_loss", "eval_loss"]
    df = pd.DataFrame(sorted(rows.values(), key=lambda r: r["step"]))
    return df[[c for c in cols if c in df] + [c for c in df.columns if c not in cols]]


# ---------------------------------------------------------------------- tuning
DEFAULT_SPACE: dict[str, dict[str, tuple]] = {
    "head": {"learning_rate": ("log", 3e-4, 3e-2), "epochs": ("int", 3, 30), "weight_decay": ("float", 0.0, 0.1)},
    "top": {"learning_rate": ("log", 1e-4, 1e-2), "epochs": ("int", 3, 20), "weight_decay": ("float", 0.0, 0.1)},
    "full": {"learning_rate": ("log", 1e-5, 2e-4), "epochs": ("int", 1, 5), "batch_size": ("categorical", [8, 16, 32])},
}
_TUNABLE = {"learning_rate", "epochs", "weight_decay", "batch_size", "class_weights"}


def _sample(trial, space: dict) -> dict:
    params = {}
    for name, spec in space.items():
        if name not in _TUNABLE:
            raise unknown_name("hyperparameter in space", name, _TUNABLE)
        kind, *args = spec
        if kind == "log":
            params[name] = trial.suggest_float(name, args[0], args[1], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, args[0], args[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, args[0], args[1])
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, args[0])
        else:
            raise unknown_name("kind of search range", kind, ["log", "float", "int", "categorical"])
    return params


def tune(task, train_df, eval_df, *, n_trials: int, space: dict | None, strategy: str, metric: str | None,
         seed: int, timeout: float | None, validation_split: float) -> TuneResult:
    """optuna's TPE search over ``space``: each trial fine-tunes from the same starting weights; the model and its
    meta are put back afterwards, so tuning never changes the model the user holds."""
    import optuna

    strategy = resolve_strategy(task, strategy, len(train_df), [f"space={{{', '.join(map(repr, space))}}}"] if space else ())
    if strategy == "probe":
        return _tune_probe(task, train_df, eval_df, space=space, metric=metric, seed=seed)
    if eval_df is None:
        train_df, eval_df = _split_validation(task, train_df, validation_split, seed)
    metric = metric or task.training.best_metric.removeprefix("eval_")
    space = space or getattr(task, "tune_space", {}).get(strategy) or DEFAULT_SPACE[strategy]
    task._prepare_targets(train_df, eval_df)  # fixes labels and head before the snapshot
    snapshot = copy.deepcopy(task.model.state_dict())
    meta = copy.deepcopy(task.meta)
    tmp = Path(tempfile.mkdtemp(prefix="appkit-tune-"))
    objective = _objective(task, train_df, eval_df, snapshot=snapshot, space=space, strategy=strategy, seed=seed,
                           metric=metric, tmp=tmp)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if metric in ("loss", "wer", "cer") else "maximize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    try:
        from .widgets.progress import TrialDisplay   # each trial as it finishes (no ipywidgets needed)

        shown = TrialDisplay(metric=metric, direction=direction, n_trials=n_trials)
        study.optimize(objective, n_trials=n_trials, timeout=timeout, show_progress_bar=False, callbacks=[shown])
        shown.finish()
    finally:
        task.model.load_state_dict(snapshot)  # tuning never changes the model the user holds
        task.meta = meta
        shutil.rmtree(tmp, ignore_errors=True)
    return _tune_result(study, metric, strategy)


def _tune_probe(task, train_df, eval_df, *, space: dict | None, metric: str | None, seed: int) -> TuneResult:
    """Strategy "probe" searches its own settings (layer, regularisation, class weighting) by cross-validation on
    cached features, every candidate in seconds: tune() runs that search once and shows its table."""
    if space:
        raise DataError(_msg("strategy 'probe' has no learning rate, epochs or batch size to search",
                             where=f"space={space!r}",
                             fix="call tune(...) without space= (the probe chooses its layer and regularisation by "
                                 "cross-validation), or pass strategy='head' to search the head's settings"))
    metric = metric or task.training.best_metric.removeprefix("eval_")
    tmp = Path(tempfile.mkdtemp(prefix="appkit-tune-"))
    try:
        run = fine_tune(task, train_df, eval_df, TrainConfig(strategy="probe", seed=seed, output_dir=tmp,
                                                             progress=False, checkpoints=False))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TuneResult(trials=run.history, best_params={}, best_value=_metric_of(run, metric), metric=metric,
                      strategy="probe", extra=dict(run.params))


def _metric_of(run: TrainingRun, metric: str) -> float:
    if metric not in run.metrics:
        raise DataError(_msg(f"metric={metric!r} is not reported", where=f"available: {sorted(run.metrics)}"))
    return run.metrics[metric]


def _objective(task, train_df, eval_df, *, snapshot: dict, space: dict, strategy: str, seed: int, metric: str,
               tmp: Path):
    """One optuna trial: the starting weights back, settings sampled from ``space``, a fine-tune, its ``metric``."""
    def objective(trial):
        task.model.load_state_dict(snapshot)
        params = _sample(trial, space)
        cfg = TrainConfig(strategy=strategy, seed=seed, output_dir=tmp / f"trial-{trial.number}", progress=False,
                          checkpoints=False, **params)
        with warnings.catch_warnings():  # the data warnings were shown once, before the first trial
            warnings.simplefilter("ignore")
            run = fine_tune(task, train_df, eval_df, cfg)
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
        return _metric_of(run, metric)

    return objective


def _tune_result(study, metric: str, strategy: str) -> TuneResult:
    done = [t for t in study.trials if t.value is not None]
    if not done:
        raise AppkitError(_msg("No trial finished", fix="raise n_trials or timeout"))
    trials = study.trials_dataframe(attrs=("number", "value", "params", "duration"))
    trials = trials.rename(columns=lambda c: c.removeprefix("params_")).rename(columns={"value": metric})
    trials["duration"] = trials["duration"].dt.total_seconds()
    return TuneResult(trials=trials, best_params=study.best_params, best_value=study.best_value, metric=metric,
                      strategy=strategy)
