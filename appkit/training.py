"""The one fine-tune engine, on transformers' Trainer.

Trainer gives checkpoints, resume, early stopping, mixed precision, progress bars
(terminal and notebook) and DDP under torchrun / accelerate launch. appkit adds
the "head" strategy (features from the frozen model computed once, then only a
small head is trained: minutes on a laptop CPU), class weights, and a history
DataFrame.

Task hooks used here:
- ``_prepare_targets(train_df, eval_df) -> (train_targets, eval_targets)``: validate
  references, set up labels / a new head; must be idempotent.
- ``_preprocess(item, where)`` (as in predict) and ``_train_collate(units, targets, train)``
  -> model inputs with ``labels`` (augmentation when train=True).
- ``_features(batch) -> Tensor`` and ``_head() -> nn.Module`` for strategy "head";
  ``_head_collate(pairs)`` stacks (feature, target) pairs.
- ``_loss(logits, labels, weights)``, ``_step_loss(model, inputs)`` for tasks whose
  models compute their own loss, ``_class_weights(targets)``, ``_trainer_metrics(logits, labels)``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .data import fingerprint
from .errors import AppkitError, DataError, _msg, unknown_name


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
    validation_split: float = 0.0
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

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        h = self.history
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
        return (f"<b>Fine-tuning run</b>{state}: strategy <code>{self.strategy}</code>, {self.seconds:.0f} s"
                f"{', ' + metrics if metrics else ''}<br>" + self.history.tail(10).to_html(index=False, float_format="%.4f"))


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
        return (f"<b>Hyperparameter search</b>: best {self.metric} {self.best_value:.4f} with "
                f"<code>{self.best_params}</code><br>" + self.trials.to_html(index=False, float_format="%.4g"))


def resolve_strategy(task, strategy: str) -> str:
    if strategy not in ("auto", *task.strategies):
        raise unknown_name("strategy", strategy, ["auto", *task.strategies])
    if strategy == "auto":
        return "head" if (task.device == "cpu" and "head" in task.strategies) else "full"
    return strategy


def _split_validation(task, train_df: pd.DataFrame, fraction: float, seed: int):
    from .data import train_test_split

    strat = task.target_column if getattr(task, "is_classifier", False) else None
    return train_test_split(train_df, test_size=fraction, seed=seed, stratify=strat)


def fine_tune(task, train_df: pd.DataFrame, eval_df: pd.DataFrame | None, cfg: TrainConfig) -> TrainingRun:
    import torch
    from transformers import set_seed

    strategy = resolve_strategy(task, cfg.strategy)
    if cfg.epochs is None:
        cfg = dataclasses.replace(cfg, epochs=task.default_epochs[strategy])
    if cfg.epochs <= 0:
        raise DataError(_msg(f"epochs={cfg.epochs} must be positive", fix="e.g. epochs=3"))
    if eval_df is None and cfg.validation_split:
        train_df, eval_df = _split_validation(task, train_df, cfg.validation_split, cfg.seed)
    if cfg.early_stopping_patience and eval_df is None:
        raise DataError(_msg("early_stopping_patience needs validation data",
                             fix="pass eval_data=... or validation_split=0.1"))
    train_y, eval_y = task._prepare_targets(train_df, eval_df)
    train_units = _preprocess_all(task, train_df, "training data")
    eval_units = _preprocess_all(task, eval_df, "evaluation data") if eval_df is not None else None

    set_seed(cfg.seed)
    weights = task._class_weights(train_y) if cfg.class_weights == "auto" else None
    if cfg.class_weights not in ("auto", None):
        raise unknown_name("class_weights", cfg.class_weights, ["auto", None])
    out_dir = Path(cfg.output_dir or Path("runs") / f"{task.task}-{strategy}-{data_fingerprint(task, train_df)}")
    if strategy == "head":
        model = _HeadModel(task._head())
        train_ds = _PairDataset(_cached_features(task, train_units, train_df, out_dir, "train"), train_y)
        eval_ds = _PairDataset(_cached_features(task, eval_units, eval_df, out_dir, "eval"), eval_y) if eval_units else None
        collate = task._head_collate
    else:
        model = task.model
        train_ds = _PairDataset(train_units, train_y)
        eval_ds = _PairDataset(eval_units, eval_y) if eval_units else None
        collate = _FullCollator(task)

    lr = cfg.learning_rate or task.default_learning_rate[strategy]
    bs = cfg.batch_size or task.default_train_batch_size[strategy]
    trainer = _build_trainer(task, model, train_ds, eval_ds, collate, cfg, strategy, out_dir, lr, bs, weights)
    resume_from = _last_checkpoint(out_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        warnings.warn(f"resume=True but no checkpoint was found in {out_dir}; training from the start.", UserWarning, stacklevel=3)
    started, interrupted = time.perf_counter(), False
    task.model.train()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except KeyboardInterrupt:
        interrupted = True
        _save_interrupted(trainer)
        warnings.warn(
            f"Training was interrupted at step {trainer.state.global_step}. The model keeps the weights it had then; "
            f"checkpoints are in {out_dir}. Run fine_tune(..., resume=True) with the same data to continue.",
            UserWarning, stacklevel=3)
    finally:
        task.model.eval()
        torch.set_grad_enabled(True)
    seconds = time.perf_counter() - started
    history = _history(trainer.state.log_history)
    metrics = {}
    if eval_ds is not None and not interrupted:
        metrics = {k.removeprefix("eval_"): v for k, v in trainer.evaluate().items()
                   if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))}
    task.meta["training"] = {"strategy": strategy, "epochs": cfg.epochs, "learning_rate": lr, "batch_size": bs,
                             "seed": cfg.seed, "data_fingerprint": data_fingerprint(task, train_df), "rows": len(train_df),
                             "eval_metrics": metrics, "seconds": round(seconds, 1)}
    return TrainingRun(history=history, strategy=strategy, metrics=metrics, output_dir=out_dir, seconds=seconds,
                       interrupted=interrupted, params={"learning_rate": lr, "batch_size": bs, "epochs": cfg.epochs,
                                                        "weight_decay": cfg.weight_decay},
                       resumed_from_step=int(Path(resume_from).name.split("-")[-1]) if resume_from else None)


def data_fingerprint(task, df: pd.DataFrame) -> str:
    """Content fingerprint of a data frame, with inputs identified by the task (in-memory images and audio
    by a hash of their content, not by how they print)."""
    keys = [task._dedup_key(x) for x in df[task.input_column]]
    return fingerprint(df.drop(columns=[task.input_column]).assign(_input=keys))


def _preprocess_all(task, df: pd.DataFrame, where: str) -> list:
    """Every example is decoded and checked before any training starts."""
    return [task._preprocess(x, where=f"row {i} of the {where}") for i, x in enumerate(df[task.input_column])]


class _PairDataset:
    def __init__(self, xs, ys):
        self.xs, self.ys = xs, ys

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


def _cached_features(task, units: list, df: pd.DataFrame, out_dir: Path, split: str):
    """Frozen-model features, computed once per (model, data) and kept in memory and on disk."""
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    import hashlib

    model_key = hashlib.sha256(task._model_key().encode()).hexdigest()[:12]
    key = f"{model_key}-{data_fingerprint(task, df[[task.input_column]])}"
    if key in task._feature_cache:
        return task._feature_cache[key]
    path = out_dir / f"features-{split}-{key}.safetensors"
    if path.exists():
        feats = load_file(str(path))["features"]
    else:
        order = sorted(range(len(units)), key=lambda i: -task._length(units[i]))
        bs = task.default_batch_size
        chunks: dict[int, torch.Tensor] = {}
        task.model.eval()
        with torch.inference_mode(), task._autocast():
            for k in tqdm(range(0, len(order), bs), desc=f"features ({split})", leave=False):
                idx = order[k:k + bs]
                f = task._features(task._to_device(task._collate([units[i] for i in idx]))).cpu()
                # bf16 features (Whisper's bf16 encoder copy) stay bf16: lossless, half the memory and disk
                f = f if f.dtype == torch.bfloat16 else f.float()
                chunks.update({i: f[j] for j, i in enumerate(idx)})
        feats = torch.stack([chunks[i] for i in range(len(units))])
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({"features": feats.contiguous()}, str(path))
    task._feature_cache[key] = feats
    return feats


def _build_trainer(task, model, train_ds, eval_ds, collate, cfg: TrainConfig, strategy: str, out_dir: Path,
                   lr: float, bs: int, weights):
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    from .tasks.base import _bf16_ok

    steps_per_epoch = max(1, math.ceil(len(train_ds) / bs))
    best = task.best_metric
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=cfg.epochs, learning_rate=lr, per_device_train_batch_size=bs,
        per_device_eval_batch_size=max(bs, 32), weight_decay=cfg.weight_decay, warmup_steps=int(0.06 * steps_per_epoch * cfg.epochs),
        lr_scheduler_type="linear", seed=cfg.seed, data_seed=cfg.seed,
        eval_strategy="epoch" if eval_ds is not None else "no",
        save_strategy="epoch" if (cfg.checkpoints or cfg.early_stopping_patience) else "no", save_total_limit=2,
        save_only_model=False, load_best_model_at_end=bool(cfg.early_stopping_patience),
        metric_for_best_model=best if cfg.early_stopping_patience else None,
        greater_is_better=(best != "eval_loss") if cfg.early_stopping_patience else None,
        logging_strategy="steps", logging_steps=max(1, steps_per_epoch // 4), logging_first_step=True,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=task.device == "cpu", bf16=(strategy == "full" and task.precision != "float32" and _bf16_ok(task.device)),
        disable_tqdm=not cfg.progress, label_names=["labels"],
    )
    callbacks = [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)] if cfg.early_stopping_patience else []
    callbacks += list(cfg.callbacks)
    weight_t = torch.tensor(weights, dtype=torch.float32) if weights is not None else None

    class AppkitTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = task._step_loss(model, dict(inputs), weight_t)
            return (loss, outputs) if return_outputs else loss

    metrics_fn = None
    if task._has_trainer_metrics:
        def metrics_fn(ev):
            return task._trainer_metrics(ev.predictions, ev.label_ids)

    trainer = AppkitTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collate,
                            compute_metrics=metrics_fn, callbacks=callbacks)
    # Trainer's own bars and raw log dicts give way to appkit's display: a live widget in a notebook,
    # one bar and a line per epoch in a terminal (appkit.widgets.progress imports ipywidgets only in a kernel)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for cb in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(cb)
    if cfg.progress:
        from .widgets.progress import progress_callback

        trainer.add_callback(progress_callback(metric=best.removeprefix("eval_")))
    return trainer


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


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
    import optuna

    strategy = resolve_strategy(task, strategy)
    if eval_df is None:
        train_df, eval_df = _split_validation(task, train_df, validation_split, seed)
    metric = metric or task.best_metric.removeprefix("eval_")
    space = space or DEFAULT_SPACE[strategy]
    task._prepare_targets(train_df, eval_df)  # fixes labels and head before the snapshot
    snapshot = copy.deepcopy(task.model.state_dict())
    meta = copy.deepcopy(task.meta)
    tmp = Path(tempfile.mkdtemp(prefix="appkit-tune-"))

    def objective(trial):
        task.model.load_state_dict(snapshot)
        params = _sample(trial, space)
        cfg = TrainConfig(strategy=strategy, seed=seed, output_dir=tmp / f"trial-{trial.number}", progress=False,
                          checkpoints=False, **params)
        with warnings.catch_warnings():  # the data warnings were shown once, before the first trial
            warnings.simplefilter("ignore")
            run = fine_tune(task, train_df, eval_df, cfg)
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
        if metric not in run.metrics:
            raise DataError(_msg(f"metric={metric!r} is not reported", where=f"available: {sorted(run.metrics)}"))
        return run.metrics[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if metric in ("loss", "wer", "cer") else "maximize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, show_progress_bar=True)
    finally:
        task.model.load_state_dict(snapshot)  # tuning never changes the model the user holds
        task.meta = meta
        shutil.rmtree(tmp, ignore_errors=True)
    done = [t for t in study.trials if t.value is not None]
    if not done:
        raise AppkitError(_msg("No trial finished", fix="raise n_trials or timeout"))
    trials = study.trials_dataframe(attrs=("number", "value", "params", "duration"))
    trials = trials.rename(columns=lambda c: c.removeprefix("params_")).rename(columns={"value": metric})
    trials["duration"] = trials["duration"].dt.total_seconds()
    return TuneResult(trials=trials, best_params=study.best_params, best_value=study.best_value, metric=metric,
                      strategy=strategy)

