"""Task: the public contract (predict / fine_tune / tune / evaluate / save), written once.

A task file subclasses Task, registers itself and implements small hooks:

- ``_load(source, *, labels, meta, **options)``  build model + processor (classmethod)
- ``_preprocess(item, where)``   decode and validate one input (raise DataError/MediaError)
- ``_collate(units)``            a batch of preprocessed units -> model inputs
- ``_forward(batch, **opts)``    model inputs -> raw outputs
- ``_postprocess(raw, units, **opts)`` raw outputs -> one result dict per unit
- ``_metrics(results, refs)``    evaluation metrics
Training hooks (``_targets``, ``_train_collate``, ``_features``, ``_head``...) are
documented in appkit/training.py. Everything else (batching, devices,
precision, progress, errors="skip", DataFrames, saving) lives here.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .. import __version__
from ..data import apply_columns, read_table
from ..errors import AppkitError, DataError, ModelError, _msg, unknown_name, warn
from ..folders import check_model_folder, read_meta
from ..registry import DEFAULT_MODEL, find_model, model_names, require_offline

META_FILE = "appkit.json"
_ERRORS_MODES = ("raise", "skip")


@contextlib.contextmanager
def quiet_transformers():
    """No 'Loading weights' bars or 'newly initialized' notices: appkit says what matters itself.

    Nor a prompt: for a model that asks to run its own code, transformers would ask "run the custom
    code? [y/N]" in a notebook; with the timeout at 0 it refuses at once (appkit never runs model code)."""
    from transformers import dynamic_module_utils
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    timeout = dynamic_module_utils.TIME_OUT_REMOTE_CODE
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    dynamic_module_utils.TIME_OUT_REMOTE_CODE = 0
    try:
        yield
    finally:
        dynamic_module_utils.TIME_OUT_REMOTE_CODE = timeout
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def content_key(x) -> str:
    """A path or text as itself; an in-memory item (array, bytes, PIL image, (array, rate), dict) as a
    hash of its content, since printing such objects elides it and two different ones could collide."""
    import hashlib

    if isinstance(x, (str, os.PathLike)):
        return str(x)
    h = hashlib.blake2b(digest_size=12)

    def feed(v) -> None:
        if isinstance(v, (bytes, bytearray)):
            h.update(bytes(v))
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for e in v:
                feed(e)
        elif hasattr(v, "tobytes"):   # numpy arrays, PIL images
            h.update(f"{getattr(v, 'dtype', getattr(v, 'mode', ''))}{getattr(v, 'shape', getattr(v, 'size', ''))}".encode())
            h.update(v.tobytes())
        else:
            h.update(repr(v).encode())

    feed(x)
    return f"<content {h.hexdigest()}>"


def _bf16_ok(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN says whether the CPU has native bf16 (AVX512-BF16 / AMX)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def hash_weights(state: dict) -> str:
    """A hash of every tensor of a state dict (names and float32 values): feature caches and ONNX exports use it
    to tell weights apart."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Result(dict):
    """One prediction: a plain dict (JSON, pandas and ``==`` see a dict) that prints its numbers rounded
    to 4 decimals in a notebook or terminal; the values themselves stay exact."""

    def __repr__(self) -> str:
        return repr(_rounded(dict(self)))

    def _repr_pretty_(self, p, cycle) -> None:   # IPython
        p.pretty(_rounded(dict(self)))


def _rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_rounded(x) for x in v)
    return v


class Pieces(list):
    """What ``_preprocess`` returns when one input becomes several model units (a long recording ->
    30 s windows). Each piece is sorted and batched like any unit; ``_merge(results, pieces, **options)``
    then joins the pieces' results into the input's one result (in piece order)."""


class Task:
    task: ClassVar[str] = ""
    input_column: ClassVar[str] = "text"
    target_column: ClassVar[str] = "label"
    strategies: ClassVar[tuple[str, ...]] = ("head", "full")
    default_batch_size: ClassVar[int] = 32
    load_options: ClassVar[tuple[str, ...]] = ()   # task-specific keywords of appkit.load
    # precision="auto" uses bf16 only for tasks where it kept >= 99.5% of labels identical to float32 on
    # real data (README, "Precision"); a task that measured less sets this False
    auto_bf16: ClassVar[bool] = True
    predict_options: ClassVar[tuple[str, ...]] = ()  # task-specific keywords of predict
    backend: str = "torch"                           # "onnx" after load(..., backend="onnx") (appkit/export.py)

    def __init__(self, model, processor, *, labels: list[str] | None, meta: dict, device: str, precision: str):
        self.model = model
        self.processor = processor
        self.labels = list(labels) if labels else None
        self.meta = meta
        self.device = device
        self.precision = precision
        self.skipped: list[tuple[int, str]] = []   # (position, reason) of the last predict with errors="skip"
        self.last_run = None
        self._feature_cache: dict[str, Any] = {}
        self._card_data = None   # (train, eval) frames of the last fine_tune, for the data card; never saved

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, labels=None, device: str | None = None,
                        precision: str = "auto", backend: str = "torch", **options) -> "Task":
        """backend="onnx": predict through the model.onnx that export_onnx wrote into the folder (CPU)."""
        unknown = set(options) - set(cls.load_options)
        if unknown:
            raise unknown_name(f"option for appkit.load({cls.task!r}, ...):", sorted(unknown)[0],
                               list(cls.load_options) + ["labels", "device", "precision", "backend"])
        if precision not in ("auto", "float32", "bfloat16"):
            raise unknown_name("precision", precision, ["auto", "float32", "bfloat16"])
        if backend not in ("torch", "onnx"):
            raise unknown_name("backend", backend, ["torch", "onnx"])
        device = cls._resolve_device(device or ("cpu" if backend == "onnx" else None))
        source, meta = cls._resolve_source(model)
        if labels is not None:
            labels = cls._check_label_names(labels)
        import torch

        # a new head is initialised from the RNG: seeded, so loading the same model twice gives the same
        # model and fine_tune(seed=...) repeats exactly; fork_rng leaves the user's own RNG state alone
        with quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            inst = cls._load(source, labels=labels, meta=meta, device=device, **options)
        inst.precision = precision
        inst.model.to(device).eval()
        if backend == "onnx":
            from ..export import use_onnx

            use_onnx(inst, source)
        return inst

    @staticmethod
    def _resolve_device(device: str | None) -> str:
        import torch

        if device is None:
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(_msg(f"device={device!r} was asked for but no GPU is visible", fix="use device='cpu' or leave device unset"))
        return device

    @classmethod
    def _resolve_source(cls, model) -> tuple[Any, dict]:
        """Catalogue name, local folder or hub id -> (what _load gets, appkit.json contents)."""
        if model is None:
            model = DEFAULT_MODEL.get(cls.task)
            if model is None:
                names = model_names(cls.task)
                raise ModelError(_msg(f"No model is packaged offline for {cls.task!r}, so there is no default",
                                      fix=f"pass model='<hub id or folder>', e.g. one of {names} (needs internet once) "
                                          "or a folder saved by .save()"))
        entry = find_model(str(model))
        if entry is not None:
            if entry.task != cls.task:
                raise ModelError(_msg(f"{entry.name!r} is a {entry.task} model, not a {cls.task} model",
                                      fix=f"see appkit.list_models({cls.task!r})"))
            if entry.hub_id:
                return entry.hub_id, {"catalogue": entry.name}
            require_offline(entry)
            return cls._catalogue_source(entry), {"catalogue": entry.name}
        path = Path(model).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelError(_msg(f"{str(path)!r} is a file", expected="a model folder (as written by .save())"))
            check_model_folder(path)
            meta = {}
            if (path / META_FILE).exists():
                meta = read_meta(path)
                if meta.get("task") != cls.task:
                    raise ModelError(_msg(
                        f"The folder {str(path)!r} holds a {meta.get('task')} model, not {cls.task}",
                        fix=f"load it with appkit.load({meta.get('task')!r}, {str(path)!r})"))
            return str(path), meta
        if "/" not in str(model) or str(model).startswith((".", "~")):
            # not a folder and not shaped like a hub id: most likely a typo of a catalogue name
            names = model_names(cls.task)
            raise unknown_name(f"{cls.task} model (or folder)", model, names)
        return str(model), {}

    @classmethod
    def _catalogue_source(cls, entry):
        raise ModelError(_msg(f"The task {cls.task!r} cannot load the packaged model {entry.name!r}"))

    @staticmethod
    def _check_label_names(labels) -> list[str]:
        if isinstance(labels, str) or not hasattr(labels, "__iter__"):
            raise DataError(_msg(f"labels={labels!r} is not a list", expected="a list of class names, e.g. labels=['negative', 'positive']"))
        labels = [str(x) for x in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels) or not all(x.strip() for x in labels):
            raise DataError(_msg(f"labels={labels!r} must hold at least two different, non-empty names",
                                 fix="e.g. labels=['negative', 'positive']"))
        return labels

    @classmethod
    def _hub_error(cls, source, exc: Exception) -> ModelError:
        return ModelError(_msg(
            f"Could not load {source!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
            expected=f"a name from appkit.list_models({cls.task!r}), a model folder, or a hub id (needs internet once)",
            fix="check the name; offline, pick a catalogue model whose 'offline' column is True",
        ))

    # ------------------------------------------------------------------ predict
    def predict(self, inputs, *, column: str | None = None, batch_size: int | None = None,
                errors: str = "raise", progress: bool | None = None, **options):
        """One input -> one result dict; a list -> a list (same order); a DataFrame -> a copy with prediction columns."""
        self._check_predict_options(options, errors)
        if isinstance(inputs, pd.DataFrame):
            return self._predict_frame(inputs, column=column, batch_size=batch_size, errors=errors,
                                       progress=progress, **options)
        if column is not None:
            raise DataError(_msg("column= is only used with a DataFrame", fix="pass the DataFrame itself, or drop column="))
        single = self._is_single(inputs)
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        results = self._run(items, batch_size=batch_size, errors=errors, where="input", progress=progress, **options)
        return results[0] if single else results

    def _check_predict_options(self, options: dict, errors: str) -> None:
        if errors not in _ERRORS_MODES:
            raise unknown_name("errors mode", errors, _ERRORS_MODES)
        unknown = set(options) - set(self.predict_options)
        if unknown:
            raise unknown_name(f"option for {self.task} predict:", sorted(unknown)[0],
                               ["column", "batch_size", "errors", "progress", *self.predict_options])

    def _is_single(self, inputs) -> bool:
        return isinstance(inputs, (str, bytes, os.PathLike))

    def _predict_frame(self, df: pd.DataFrame, *, column, batch_size, errors, progress, **options) -> pd.DataFrame:
        column = column or self.input_column
        if column not in df.columns:
            raise DataError(_msg(f"The DataFrame has no column {column!r}", where=f"its columns are {list(df.columns)}",
                                 fix="pass column='<the column holding the inputs>'"))
        results = self._run(list(df[column]), batch_size=batch_size, errors=errors, where="row", progress=progress,
                            **options)
        out = df.copy()
        for key in self._frame_keys():
            out[f"pred_{key}"] = [r.get(key) if r else None for r in results]
        return out

    def _frame_keys(self) -> list[str]:
        return ["label", "score"]

    def _use_bf16(self) -> bool:
        """The one precision rule: bfloat16 where asked, or under "auto" where the hardware runs it natively
        and the task's measured label agreement with float32 allowed it (``auto_bf16``)."""
        if self.precision == "bfloat16":
            return True
        return self.precision == "auto" and self.auto_bf16 and _bf16_ok(self.device)

    @property
    def runs_in(self) -> str:
        """Which numeric path predictions take, in words (shown in reports and model cards)."""
        return ("bfloat16 for the model body, float32 for the scores" if self._use_bf16()
                else "float32")

    def _autocast(self):
        import torch

        if not self._use_bf16():
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)

    def _run(self, items: list, *, batch_size, errors, where: str, progress: bool | None = None, **options) -> list:
        """Preprocess every item first (bad input fails before model work), then batch by length."""
        import torch

        from ..widgets.progress import bar   # no tqdm widget in a notebook (ipywidgets imported only in a kernel)

        units, bad, split = [], [], {}
        for i, item in enumerate(items):
            try:
                unit = self._preprocess(item, where=f"{where} {i}", **options)
            except AppkitError as exc:
                if errors == "raise":
                    raise
                bad.append((i, str(exc)))
                continue
            if isinstance(unit, Pieces):
                split[i] = unit
                units.extend(((i, k), piece) for k, piece in enumerate(unit))
            else:
                units.append((i, unit))
        batch_size = batch_size or self.default_batch_size
        # longest first: similar lengths share a batch (little padding) and memory peaks at once
        units.sort(key=lambda u: -self._length(u[1]))
        results: list = [None] * len(items)
        parts: dict = {}   # (item, piece) -> result, for inputs split into Pieces
        batches = self._batches(units, batch_size, **options)
        show = progress if progress is not None else len(batches) > 3
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for batch in bar(batches, desc=f"{self.task}", unit="batch", disable=not show):
                prepared = [u for _, u in batch]
                raw = self._forward(self._to_device(self._collate(prepared)), **options)
                for (i, _), res in zip(batch, self._postprocess(raw, prepared, **options)):
                    if isinstance(i, tuple):
                        parts[i] = res
                    else:
                        results[i] = res
        for i, pieces in split.items():
            results[i] = self._merge([parts[(i, k)] for k in range(len(pieces))], pieces, **options)
        self.skipped = bad
        if bad:
            listed = "; ".join(f"{where} {i}: {msg}" for i, msg in bad[:5])
            warn(f"Skipped {len(bad)} of {len(items)} inputs (their result is None; see .skipped): {listed}"
                 + (" ..." if len(bad) > 5 else ""))
        return [Result(r) if isinstance(r, dict) else r for r in results]

    def _batches(self, units: list, batch_size: int, **options) -> list[list]:
        """Cut the length-sorted ``(key, unit)`` list into batches (speech packs short clips here)."""
        return [units[k:k + batch_size] for k in range(0, len(units), batch_size)]

    def _merge(self, results: list, pieces: Pieces, **options):
        raise NotImplementedError(f"{type(self).__name__} split an input into Pieces but has no _merge")

    def _to_device(self, batch):
        if hasattr(batch, "to"):
            return batch.to(self.device)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in batch.items()}

    def _length(self, unit) -> int:
        return 0

    def _dedup_key(self, x) -> str:
        """What identifies an input: duplicate checks and the feature-cache fingerprint use it."""
        return content_key(x)

    def _model_key(self) -> str:
        """Identifies the weights that compute cached features, so a changed model never reuses stale ones."""
        return hash_weights(self._feature_state())

    def _feature_state(self) -> dict:
        return self.model.state_dict()

    # ------------------------------------------------------------------ data
    def _read(self, data, *, columns: dict | None, where: str, need_target: bool = True) -> pd.DataFrame:
        """User data -> DataFrame with appkit's column names (folders are read by the task)."""
        if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
            df = self._read_folder(Path(data), where=where)
        else:
            df = read_table(data, where=where)
        required = [self.input_column] + ([self.target_column] if need_target else [])
        return apply_columns(df, required=required, columns=columns, where=where)

    def _read_folder(self, path: Path, *, where: str) -> pd.DataFrame:
        raise DataError(_msg(f"The {where} is a folder, which {self.task} cannot read",
                             expected="a DataFrame, list of dicts, datasets.Dataset or CSV/JSONL file"))

    # ------------------------------------------------------------------ training
    def fine_tune(self, train, *, eval_data=None, epochs: float | None = None, strategy: str = "auto", seed: int = 0,
                  learning_rate: float | None = None, batch_size: int | None = None, weight_decay: float = 0.01,
                  class_weights: str | None = "auto", early_stopping_patience: int | None = None,
                  validation_split: float | None = None, output_dir: str | os.PathLike | None = None,
                  resume: bool = False, checkpoints: bool = True, columns: dict | None = None, progress: bool = True,
                  callbacks: list | None = None):
        """Fine-tune on ``train``; returns a TrainingRun whose ``history`` is a DataFrame.

        strategy: "head" trains a new head on features the frozen model computes once (minutes on a
        laptop CPU); "full" trains every weight; "auto" = head on CPU, full on a GPU.
        epochs: None takes the strategy's default (``type(task).default_epochs``: many cheap
        epochs for "head", a few for "full"). With validation data (``eval_data``, or
        ``validation_split``) the weights of the best epoch are kept, not the last, and a classifier's
        confidence scores are calibrated on it (temperature scaling, folded into the saved weights).
        validation_split: None = auto: 20% of the training rows (stratified) for a classifier's
        "head" strategy when there are at least 100 rows and every class keeps 5 on each side; 0 = none.
        class_weights: "auto" weighs each class by the square root of its rarity (small classes count
        without making the model overconfident), "balanced" by its full rarity, None not at all.
        checkpoints: a checkpoint each epoch (the last two kept) so ``resume=True`` can continue;
        False saves the disk (a Whisper decoder's is ~340 MB) but an interrupted run then keeps only
        the checkpoint taken when it stopped. Early stopping always keeps them (it restores the best).
        callbacks: transformers ``TrainerCallback``s added to the run (appkit's own progress display
        is added when progress=True).
        """
        from ..training import TrainConfig, fine_tune

        if self.backend == "onnx":
            raise ModelError(_msg("A model loaded with backend='onnx' cannot be fine-tuned",
                                  fix="load it without backend='onnx', fine-tune, then export again"))
        cfg = TrainConfig(epochs=epochs, strategy=strategy, seed=seed, learning_rate=learning_rate,
                          batch_size=batch_size, weight_decay=weight_decay, class_weights=class_weights,
                          early_stopping_patience=early_stopping_patience, validation_split=validation_split,
                          output_dir=output_dir, resume=resume, progress=progress, checkpoints=checkpoints,
                          callbacks=list(callbacks or []))
        train_df = self._read(train, columns=columns, where="training data")
        eval_df = self._read(eval_data, columns=columns, where="evaluation data") if eval_data is not None else None
        with self._unchanged_on_error():
            run = fine_tune(self, train_df, eval_df, cfg)
            self.last_run = run
            self._card_data = (train_df, eval_df)
            self._after_fit(run)
        return run

    @contextlib.contextmanager
    def _unchanged_on_error(self, *, always: bool = False):
        """A fine_tune that fails part-way (bad row, full disk, Ctrl-C while features are computed) leaves
        the task as it was: weights, head, labels, mode and meta. (Ctrl-C *during* training is not an
        error: the engine keeps the weights reached, to resume.) ``always``: restore on success too (tune)."""
        import copy

        before = dict(vars(self))
        before["model"], before["meta"] = copy.deepcopy(self.model), copy.deepcopy(self.meta)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        if always:
            self.__dict__.clear()
            self.__dict__.update(before)

    def _after_fit(self, run) -> None:
        pass

    def tune(self, train, *, eval_data=None, n_trials: int = 10, space: dict | None = None, strategy: str = "auto",
             metric: str | None = None, seed: int = 0, timeout: float | None = None, validation_split: float = 0.2,
             columns: dict | None = None):
        """Hyperparameter search with optuna; returns a TuneResult (``.trials``, ``.best_params``).

        The model's weights are left as they were: call ``fine_tune(train, **result.best_params)``.
        """
        from ..training import tune

        train_df = self._read(train, columns=columns, where="training data")
        eval_df = self._read(eval_data, columns=columns, where="evaluation data") if eval_data is not None else None
        with self._unchanged_on_error(always=True):   # trials reset the head and labels: put them back
            return tune(self, train_df, eval_df, n_trials=n_trials, space=space, strategy=strategy, metric=metric,
                        seed=seed, timeout=timeout, validation_split=validation_split)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, *, columns: dict | None = None, slice_by: str | list[str] | None = None,
                 batch_size: int | None = None, errors: str = "raise", progress: bool | None = None, **options):
        """Predict ``data`` and compare with its references -> EvalReport (renders in Jupyter)."""
        from ..evaluation import build_report

        self._check_predict_options(options, errors)
        df = self._read(data, columns=columns, where="evaluation data")
        slices = [slice_by] if isinstance(slice_by, str) else list(slice_by or [])
        for s in slices:
            if s not in df.columns:
                raise DataError(_msg(f"slice_by={s!r} is not a column of the evaluation data",
                                     where=f"its columns are {list(df.columns)}"))
        self._check_eval_targets(df)
        results = self._run(list(df[self.input_column]), batch_size=batch_size, errors=errors, where="row",
                            progress=progress, **options)
        return build_report(self, df, results, slices=slices)

    def _check_eval_targets(self, df: pd.DataFrame) -> None:
        pass

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, *, include_examples: bool = False) -> Path:
        """A plain transformers folder (safetensors) plus appkit.json and a README.md model card; reload with
        appkit.load(task, path). The card describes the training data without examples unless include_examples=True.
        The folder is written beside its destination and renamed into place, so it is never half-written."""
        from ..folders import atomic_folder

        from ..training import process_rank

        path = Path(path)
        if process_rank()[0] != 0:   # under torchrun / accelerate launch every rank holds the same weights
            return path
        with atomic_folder(path) as tmp:   # written beside, renamed into place when complete
            self._write_folder(tmp, include_examples=include_examples)
        return path

    def _write_folder(self, path: Path, *, include_examples: bool) -> None:
        from ..report import card_markdown, model_card

        with quiet_transformers():
            self.model.save_pretrained(path)
            if self.processor is not None:
                self.processor.save_pretrained(path)
        meta = {
            **{k: v for k, v in self.meta.items() if k not in ("task", "appkit_version")},
            "task": self.task,
            "appkit_version": __version__,
            "labels": self.labels,
            **self._save_meta(),
        }
        meta["model_card"] = model_card(self, include_examples=include_examples)
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        (path / "README.md").write_text(card_markdown(self, meta["model_card"]), encoding="utf-8")

    def _save_meta(self) -> dict:
        return {}

    def export_onnx(self, folder: str | os.PathLike, *, opset: int = 17) -> dict:
        """Save the model into ``folder`` with a model.onnx checked against torch (text and image classifiers).

        Returns the check: ``max_abs_diff`` (logits, onnxruntime vs torch float32), ``labels_agree``.
        ``appkit.load(task, folder, backend="onnx")`` then predicts through onnxruntime."""
        from ..export import export_onnx

        return export_onnx(self, folder, opset=opset)

    def __repr__(self) -> str:
        name = self.meta.get("catalogue") or self.meta.get("source") or type(self.model).__name__
        shown = self.labels[:8] + (["..."] if len(self.labels or []) > 8 else []) if self.labels else None
        labels = f", {len(self.labels)} labels {shown}" if self.labels else ""
        return f"<appkit {self.task}: {name}{labels}, device={self.device}>"


class ClassificationTask(Task):
    """Shared by text and image classification: labels, class weights, softmax results, the report."""
    is_classifier: ClassVar[bool] = True
    best_metric: ClassVar[str] = "eval_macro_f1"
    # head: many cheap epochs, the best one kept (measured on drug reviews: best epochs 11-20 of 30 at 1e-3)
    default_learning_rate: ClassVar[dict] = {"head": 1e-3, "full": 5e-5}
    default_train_batch_size: ClassVar[dict] = {"head": 32, "full": 16}
    default_epochs: ClassVar[dict] = {"head": 30, "full": 3}
    predict_options: ClassVar[tuple[str, ...]] = ("top_k",)
    _has_trainer_metrics: ClassVar[bool] = True

    # -- results
    def _postprocess(self, logits, units, top_k: int | None = None):
        import torch

        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        labels = self._predict_labels()
        out = []
        for p in probs:
            order = p.argsort()[::-1]
            keep = order[:top_k] if top_k else order
            out.append({"label": labels[order[0]], "score": float(p[order[0]]),
                        "scores": {labels[j]: float(p[j]) for j in keep}})
        return out

    def _predict_labels(self) -> list[str]:
        if not self.labels:
            raise self._no_labels_error()
        return self.labels

    def _no_labels_error(self):
        from ..errors import NotTrainedError

        return NotTrainedError(_msg(
            "This model does not know any labels yet",
            fix=f"name them: appkit.load({self.task!r}, labels=['...', '...']), or fine_tune on labelled data"))

    # -- training
    def _prepare_targets(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None):
        from ..data import check_known_labels, check_labels, warn_shared_duplicates

        y = [str(v) if not (isinstance(v, float) and v != v) and v is not None else v for v in train_df[self.target_column]]
        fixed = bool(self.labels and self.meta.get("labels_fixed"))
        if fixed:  # an unknown label is the more useful message than a small-class one
            check_known_labels([v for v in y if v is not None and v == v], self.labels, where="training data")
        found = check_labels(y, where="training data")
        labels = self.labels if fixed else found
        if labels != self.labels or not self._head_matches(labels):
            self._reset_head(labels)
        self.labels = labels
        index = {lab: i for i, lab in enumerate(labels)}
        eval_y = None
        if eval_df is not None:
            ey = [str(v) for v in eval_df[self.target_column]]
            check_known_labels(ey, labels, where="evaluation data")
            eval_y = [index[v] for v in ey]
            warn_shared_duplicates(list(map(self._dedup_key, train_df[self.input_column])),
                                   list(map(self._dedup_key, eval_df[self.input_column])), what="examples",
                                   column=self.input_column)
        return [index[v] for v in y], eval_y

    def _set_config_labels(self, labels: list[str]) -> None:
        """The model config carries the labels, so a saved folder names them for transformers.pipeline too."""
        self.model.config.id2label = dict(enumerate(labels))
        self.model.config.label2id = {lab: i for i, lab in enumerate(labels)}

    def _after_fit(self, run) -> None:
        if len(run.history) and run.history["step"].max() > 0:
            self.mode = "trained"
        self._set_config_labels(self.labels)

    def _class_weights(self, targets: list[int], *, balance: str = "auto"):
        """"balanced": n / (k * count) per class; "auto": its square root, which lifts small classes
        without the overconfidence full balancing caused (drug reviews: calibration error 0.22 vs 0.04)."""
        import numpy as np

        counts = np.bincount(targets, minlength=len(self.labels)).astype(float)
        w = len(targets) / (len(counts) * np.maximum(counts, 1))
        return (np.sqrt(w) if balance == "auto" else w).tolist()

    def _final_linear(self):
        """The linear layer that produces the logits (temperature scaling is folded into it)."""
        raise NotImplementedError

    def _scale_logits(self, factor: float) -> None:
        import torch

        lin = self._final_linear()
        with torch.no_grad():
            lin.weight.mul_(factor)
            if lin.bias is not None:
                lin.bias.mul_(factor)

    def _step_loss(self, model, inputs: dict, weights):
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        out = model(**inputs)
        logits = out["logits"]
        w = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits.float(), labels, weight=w), out

    def _head_collate(self, pairs):
        import torch

        feats, ys = zip(*pairs)
        return {"features": torch.stack(list(feats)).float(), "labels": torch.tensor(ys, dtype=torch.long)}

    def _trainer_metrics(self, logits, label_ids) -> dict:
        import numpy as np
        from scipy.special import softmax

        from ..metrics import classification

        logits = logits[0] if isinstance(logits, tuple) else logits
        y_true = [self.labels[i] for i in label_ids]
        y_pred = [self.labels[i] for i in np.argmax(logits, -1)]
        return classification(y_true, y_pred, self.labels, softmax(logits, -1))

    # -- evaluation
    def _check_eval_targets(self, df: pd.DataFrame) -> None:
        from ..data import check_known_labels

        check_known_labels(list(df[self.target_column]), self._predict_labels(), where="evaluation data")

    def _eval_table(self, df: pd.DataFrame, results: list) -> pd.DataFrame:
        return pd.DataFrame({
            "input": df[self.input_column].values,
            "reference": [str(v) for v in df[self.target_column]],
            "prediction": [r["label"] for r in results],
            "score": [r["score"] for r in results],
            "p_reference": [r["scores"].get(str(t), 0.0) for r, t in zip(results, df[self.target_column])],
            "scores": [r["scores"] for r in results],
        }).assign(correct=lambda t: t.reference == t.prediction)

    def _metrics(self, table: pd.DataFrame, summary: bool = False) -> dict:
        import numpy as np

        from ..metrics import classification

        labels = self._predict_labels()
        scores = np.array([[s.get(lab, 0.0) for lab in labels] for s in table["scores"]])
        m = classification(list(table["reference"]), list(table["prediction"]), labels, None if summary else scores)
        if not summary:
            m["calibration_error"] = _ece(table["score"].to_numpy(), table["correct"].to_numpy())
        return m

    def _report_extras(self, report) -> None:
        from ..metrics import confusion, per_class

        labels = self._predict_labels()
        t = report.table
        report.per_class = per_class(list(t.reference), list(t.prediction), labels)
        report.confusion = confusion(list(t.reference), list(t.prediction), labels)
        top = t.reference.value_counts()
        if len(top):
            report.baseline = {f"accuracy of always answering {top.index[0]!r}": float(top.iloc[0] / len(t))}

    def _worst(self, table: pd.DataFrame, n: int) -> pd.DataFrame:
        wrong = table[~table.correct].sort_values("p_reference")
        return wrong.head(n)[["input", "reference", "prediction", "score", "p_reference"]]

    def _worst_html(self, worst: pd.DataFrame) -> str:
        from ..report import table_html

        shown = worst.assign(input=[self._example_html(x) for x in worst["input"]])
        return table_html(shown.rename(columns={"score": "confidence", "p_reference": "p(true label)"}), raw_cols=("input",))

    def _example_html(self, x) -> str:
        import html

        s = str(x)
        return html.escape(s if len(s) < 400 else s[:400] + "…")


def _ece(conf, correct, bins: int = 10) -> float:
    """Expected calibration error: confidence vs accuracy, averaged over confidence bins."""
    import numpy as np

    if len(conf) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


class TextTargetTask(Task):
    """Shared by speech recognition and translation: the target is text, learnt as token ids."""
    best_metric: ClassVar[str] = "eval_loss"
    _has_trainer_metrics: ClassVar[bool] = False

    def _prepare_targets(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None):
        from ..data import check_text, warn_shared_duplicates

        out = []
        for df, where in ((train_df, "training data"), (eval_df, "evaluation data")):
            if df is None:
                out.append(None)
                continue
            check_text(list(df[self.target_column]), where=where, column=self.target_column)
            self._check_training_inputs(df, where=where)
            out.append([self._label_ids(t, where=f"row {i} of the {where}") for i, t in enumerate(df[self.target_column])])
        if eval_df is not None:
            warn_shared_duplicates(list(map(self._dedup_key, train_df[self.input_column])),
                                   list(map(self._dedup_key, eval_df[self.input_column])), what="examples",
                                   column=self.input_column)
        return out[0], out[1]

    def _check_training_inputs(self, df: pd.DataFrame, *, where: str) -> None:
        """Checks of the inputs that only training needs (e.g. a length the model can learn from)."""

    def _label_ids(self, text: str, *, where: str) -> list[int]:
        raise NotImplementedError

    def _class_weights(self, targets, *, balance: str = "auto"):
        return None

    def _step_loss(self, model, inputs: dict, weights):
        loss = model(**inputs).loss
        return loss, {"loss": loss}

    def _check_eval_targets(self, df: pd.DataFrame) -> None:
        from ..data import check_text

        check_text(list(df[self.target_column]), where="evaluation data", column=self.target_column)


def pad_labels(seqs: list[list[int]]):
    """Token-id targets -> one tensor, padded with -100 (what the loss ignores)."""
    import torch

    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out
