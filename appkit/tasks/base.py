"""Task: the public contract (predict / fine_tune / tune / evaluate / save), written once, over a small
declared contract that each task module fills in.

The contract, in four pieces (abstract methods: a task class that misses one fails when it is defined):

- ``Predicts``: ``_load`` (classmethod: build model + processor), ``_preprocess(item, where)`` (decode and
  validate one input), ``_collate(units)``, ``_forward(batch)``, ``_postprocess(raw, units)`` (one result
  dict per unit, with the keys the task declares in ``result_keys``).
- ``Trains`` (driven by appkit/training.py): ``training`` (a ``TrainingDefaults``), ``_prepare_targets``,
  ``_train_collate``, ``_step_loss``; ``TrainsHead`` adds ``_features``, ``_head``, ``_head_collate`` for
  strategy "head", ``TrainsTop`` ``_top_features``, ``_top`` for "top", ``TrainsProbe`` ``_probe_features``,
  ``_probe_inputs``, ``_apply_probe``, ``_restore_layers`` for "probe".
- ``Evaluates``: ``_eval_table``, ``_metrics``, ``_worst``, ``_worst_html``; ``metric_info`` says in plain
  words what each metric means.
- Options: ``predict_options`` maps each task-specific option of predict to the steps that take it
  (``preprocess``, ``batches``, ``forward``, ``postprocess``, ``merge``); an unknown one is refused before
  any work, and each hook receives only its own, by keyword.

Everything else (batching, devices, precision, progress, errors="skip", DataFrames, saving) lives here.
Per-call facts come back with the call: predict on a list returns ``Results`` (``.skipped``, plus what a task
returns from ``_call_facts``), each also set once on the task at the end of the call.
A task module also declares its catalogue entries and default model (``catalogue``, ``default_model``):
see the README, "Adding a task".
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .._version import __version__
from ..data import apply_columns, read_table
from ..data import content_key
from ..errors import AppkitError, DataError, ModelError, _msg, unknown_name, warn
from ..folders import check_model_folder, read_meta
from ..registry import ModelEntry, find_model, model_names, require_offline
from ..registry import default_model as catalogue_default
from ..runtime import HeapTrimmer, autocast, check_precision, hash_weights, quiet_transformers, resolve_device, use_bf16

META_FILE = "appkit.json"
_ERRORS_MODES = ("raise", "skip")


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


class Results(list):
    """What predict returns for a list of inputs: one result per input, in order, and what happened in this call.

    ``skipped``: (position, reason) of each input that ``errors="skip"`` left out (its result is None). A task
    adds its own per-call facts (``_call_facts``; speech: ``packing``). Each one is also set once on the task
    at the end of the call (``task.skipped``), for code that reads it there. Otherwise a plain list: ``==``,
    JSON, pickle and the notebook display see a list."""

    def __init__(self, results=(), *, skipped=(), **facts):
        super().__init__(results)
        self.skipped: list[tuple[int, str]] = list(skipped)
        for name, value in facts.items():
            setattr(self, name, value)


class Pieces(list):
    """What ``_preprocess`` returns when one input becomes several model units (a long recording ->
    30 s windows). Each piece is sorted and batched like any unit; ``_merge(results, pieces)`` (with the options
    routed to "merge") then joins the pieces' results into the input's one result (in piece order)."""


@dataclass
class _Deferred:
    """A checked input whose decoded form was let go (the call's held-inputs budget was spent): the input
    itself, to be preprocessed again when its batch runs, and its unit's length for sorting."""
    item: Any
    where: str
    options: dict
    length: int


@dataclass(frozen=True)
class TrainingDefaults:
    """What fine_tune takes when the caller does not say, per strategy ("head", "full")."""
    epochs: Mapping[str, float]
    learning_rate: Mapping[str, float]
    batch_size: Mapping[str, int]
    best_metric: str             # the validation metric that picks the epoch kept (one ending in "loss" is minimised)
    logit_metrics: bool = False  # validation metrics come from the logits (``_trainer_metrics``), not only the loss
    auto_strategy: str = "head"  # the cached strategy "auto" picks on a CPU or with few rows (when the task offers it)


@dataclass(frozen=True)
class Metric:
    """A metric as a report shows it: what it means in plain words, and whether it reads as a percentage."""
    text: str
    percent: bool = False


PREDICT_STEPS = ("preprocess", "batches", "forward", "postprocess", "merge")


class Predicts(ABC):
    """What predicting needs. ``Task._run`` calls: _preprocess per item (may return ``Pieces``), _batches,
    then per batch _collate -> _forward -> _postprocess, _merge for an item split into Pieces, and finally
    _call_facts (optional: what the task reports about the call, on the returned ``Results``). State a call
    needs across hooks travels on its units (speech's packing plan), never on the task."""

    @classmethod
    @abstractmethod
    def _load(cls, source, *, labels, meta: dict, device: str, **load_options) -> "Task":
        """Build the task from a folder or hub id (``load_options``: the task's declared ``load_options``)."""

    @abstractmethod
    def _preprocess(self, item, *, where: str):
        """Decode and check one input -> a unit (or ``Pieces``); a bad one raises an AppkitError naming ``where``."""

    @abstractmethod
    def _collate(self, units: list):
        """Units -> model inputs (a dict of tensors)."""

    @abstractmethod
    def _forward(self, batch):
        """Model inputs (on the device) -> raw outputs."""

    @abstractmethod
    def _postprocess(self, raw, units: list) -> list[dict]:
        """Raw outputs -> one result dict per unit."""


class Trains(ABC):
    """What fine_tune needs (appkit/training.py drives these; the engine keeps its own feature cache)."""
    training: ClassVar[TrainingDefaults]
    is_classifier: ClassVar[bool] = False   # a validation split is stratified and scores are calibrated

    @abstractmethod
    def _prepare_targets(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None):
        """Check the references, set up labels / a new head -> (train targets, eval targets); idempotent."""

    @abstractmethod
    def _train_collate(self, units: list, targets: list, train: bool):
        """Units and targets -> model inputs with ``labels`` (augmentation when train=True)."""

    @abstractmethod
    def _step_loss(self, model, inputs: dict, weights):
        """One training step's (loss, outputs); ``weights``: class weights or None."""

    def _class_weights(self, targets: list, *, balance: str = "auto"):
        return None

    def _after_fit(self, run) -> None:
        """After a finished run (e.g. mark a classifier trained, drop a stale inference copy)."""

    def _cached_examples(self, units: list, targets: list) -> tuple[list, list]:
        """The examples whose features are cached, from the preprocessed rows and their targets: the rows
        themselves, unless the task packs several rows into one model input as its predict does (speech)."""
        return units, targets


class TrainsHead(ABC):
    """What strategy "head" needs as well: features the frozen model computes once, and a small head over them."""

    @abstractmethod
    def _features(self, batch):
        """Model inputs -> one feature tensor per example (cached by the engine)."""

    @abstractmethod
    def _head(self):
        """The trainable module that maps features to logits (part of the model, so training it trains the model)."""

    @abstractmethod
    def _head_collate(self, pairs: list):
        """(feature, target) pairs -> a batch for the head."""

    def _head_examples(self, feats):
        """The cached features of one split as the head's dataset reads them: the features themselves, unless
        the task adds what the frozen model would otherwise compute again in every epoch (speech: each window's
        cross-attention keys and values)."""
        return feats


class TrainsTop(ABC):
    """What strategy "top" needs as well (EfficientNet-Lite, BERT-style text encoders): the input of the model's
    last block (or layer), computed once, and that block with everything after it, trained on those inputs."""

    @abstractmethod
    def _top_features(self, batch):
        """Model inputs -> the input of the last block, one tensor per example (cached by the engine)."""

    @abstractmethod
    def _top(self):
        """The last block and everything after it, as one module that maps those features to logits."""


class TrainsProbe(ABC):
    """What strategy "probe" needs as well (BERT-style text encoders): a sentence vector after every pretrained
    layer, computed once; the map from standardised features to what the head's last linear layer reads; and a
    way to make the model compute the fitted probe (its layers up to the chosen one, then the head)."""

    @abstractmethod
    def _probe_features(self, batch):
        """Model inputs -> [examples, layers, width]: one vector per pretrained layer (cached by the engine)."""

    @abstractmethod
    def _probe_inputs(self, z):
        """Standardised features [rows, width] -> the input of the head's last linear layer, exactly as the model
        will compute it once ``_apply_probe`` has run (the engine fits the linear model on these)."""

    @abstractmethod
    def _apply_probe(self, layer: int, shift, scale, coef, bias) -> None:
        """Make the model compute the probe: pretrained layers 1..layer, standardisation (x - shift) / scale,
        ``_probe_inputs``, then logits = inputs @ coef.T + bias."""

    @abstractmethod
    def _restore_layers(self) -> None:
        """Put back the pretrained layers an earlier probe removed (while this task object holds them)."""


class Evaluates(ABC):
    """What evaluate needs (appkit/evaluation.py builds the EvalReport from these)."""
    metric_info: ClassVar[Mapping[str, Metric]] = {}

    @abstractmethod
    def _eval_table(self, df: pd.DataFrame, results: list) -> pd.DataFrame:
        """One row per example: input, reference, prediction and per-example scores."""

    @abstractmethod
    def _metrics(self, table: pd.DataFrame, summary: bool = False) -> dict:
        """The task's metrics of a table (``summary``: the cheap ones, for slices and bootstrap draws)."""

    @abstractmethod
    def _worst(self, table: pd.DataFrame, n: int) -> pd.DataFrame:
        """The n rows the model got most wrong."""

    @abstractmethod
    def _worst_html(self, worst: pd.DataFrame) -> str:
        """Those rows as HTML for the report."""

    def _report_extras(self, report) -> None:
        """Add task-specific parts to the report (per-class table, baseline)."""

    def _check_eval_targets(self, df: pd.DataFrame) -> None:
        """Check the references before any prediction work."""


def _abstract_hooks(cls) -> list[str]:
    return sorted(n for n in dir(cls) if getattr(inspect.getattr_static(cls, n), "__isabstractmethod__", False))


def check_contract(cls) -> None:
    """The declared contract of a concrete task class, checked when the class is defined (not mid-training)."""
    problems = []
    missing = _abstract_hooks(cls)
    if missing:
        problems.append(f"it does not implement {', '.join(missing)}")
    training = getattr(cls, "training", None)
    if not isinstance(training, TrainingDefaults):
        problems.append("it declares no training = TrainingDefaults(...)")
    else:
        for field in ("epochs", "learning_rate", "batch_size"):
            lacking = [s for s in cls.strategies if s != "probe" and s not in getattr(training, field)]
            if lacking:
                problems.append(f"training.{field} has no value for strategy {lacking[0]!r}")
    if "head" in cls.strategies and not issubclass(cls, TrainsHead):
        problems.append("it offers strategy 'head' but is not a TrainsHead (_features, _head, _head_collate)")
    if "top" in cls.strategies and not issubclass(cls, TrainsTop):
        problems.append("it offers strategy 'top' but is not a TrainsTop (_top_features, _top)")
    if "probe" in cls.strategies and not issubclass(cls, TrainsProbe):
        problems.append("it offers strategy 'probe' but is not a TrainsProbe (_probe_features, _probe_inputs, "
                        "_apply_probe, _restore_layers)")
    if not cls.result_keys:
        problems.append("it declares no result_keys")
    for name, steps in cls.predict_options.items():
        wrong = [s for s in steps if s not in PREDICT_STEPS]
        if wrong or not steps:
            problems.append(f"predict option {name!r} is routed to {list(steps)}, not to steps of {PREDICT_STEPS}")
    if problems:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} breaks the task contract (appkit/tasks/base.py): "
                        + "; ".join(problems))


class Task(Predicts, Trains, Evaluates):
    """The public API over the contract; a task module subclasses this (or ClassificationTask / TextTargetTask).

    A subclass is checked when it is defined (``check_contract``) unless it says ``abstract=True`` (a family
    base such as ClassificationTask)."""
    task: ClassVar[str] = ""
    input_column: ClassVar[str] = "text"
    target_column: ClassVar[str] = "label"
    strategies: ClassVar[tuple[str, ...]] = ("head", "full")
    default_batch_size: ClassVar[int] = 32
    load_options: ClassVar[tuple[str, ...]] = ()   # task-specific keywords of appkit.load
    # precision="auto" uses bf16 only for tasks where it kept >= 99.5% of labels identical to float32 on
    # real data (README, "Precision"); a task that measured less sets this False
    auto_bf16: ClassVar[bool] = True
    # task-specific keywords of predict -> the steps that take them (PREDICT_STEPS)
    predict_options: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    result_keys: ClassVar[tuple[str, ...]] = ()     # keys every result dict has (the contract suite compares them)
    catalogue: ClassVar[tuple[ModelEntry, ...]] = ()  # the task's models for list_models / load by name
    default_model: ClassVar[str | None] = None        # the catalogue name appkit.load(task) takes
    frame_keys: ClassVar[tuple[str, ...]] = ()      # those that become pred_<key> columns of a DataFrame
    backend: str = "torch"                           # "onnx" after load(..., backend="onnx") (appkit/export.py)
    # what one predict call keeps of its checked inputs (decoded images, audio samples) before model work;
    # past it an input is decoded again when its batch runs, so a call's memory stops growing with its inputs
    # (10,000 images, 10 hours of audio: bench/predict_memory.py) while a usual call decodes each input once
    held_inputs_mb: ClassVar[float] = 512

    def __init__(self, model, processor, *, labels: list[str] | None, meta: dict, device: str, precision: str):
        self.model = model
        self.processor = processor
        self.labels = list(labels) if labels else None
        self.meta = meta
        self.device = device
        self.precision = precision
        # (position, reason) of each input errors="skip" left out in the last predict / evaluate: set once at the
        # end of each call; the list predict returns carries the same as ``.skipped`` (Results)
        self.skipped: list[tuple[int, str]] = []
        self.last_run = None
        self._card_data = None   # (train, eval) frames of the last fine_tune, for the data card; never saved

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if not abstract:
            check_contract(cls)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, labels=None, device: str | None = None,
                        precision: str = "auto", backend: str = "torch", **options) -> "Task":
        """backend="onnx": predict through the model.onnx that export_onnx wrote into the folder (CPU)."""
        unknown = set(options) - set(cls.load_options)
        if unknown:
            raise unknown_name(f"option for appkit.load({cls.task!r}, ...):", sorted(unknown)[0],
                               list(cls.load_options) + ["labels", "device", "precision", "backend"])
        check_precision(precision)
        if backend not in ("torch", "onnx"):
            raise unknown_name("backend", backend, ["torch", "onnx"])
        device = resolve_device(device or ("cpu" if backend == "onnx" else None))
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

    @classmethod
    def _resolve_source(cls, model) -> tuple[Any, dict]:
        """Catalogue name, local folder or hub id -> (what _load gets, appkit.json contents)."""
        if model is None:
            model = catalogue_default(cls.task)
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
        """One input -> one result dict; a list -> a list (same order; a ``Results``, which also carries what happened
        in this call, e.g. ``.skipped``); a DataFrame -> a copy with prediction columns."""
        self._check_predict_options(options, errors)
        if isinstance(inputs, pd.DataFrame):
            return self._predict_frame(inputs, column=column, batch_size=batch_size, errors=errors,
                                       progress=progress, **options)
        if column is not None:
            raise DataError(_msg("column= is only used with a DataFrame", fix="pass the DataFrame itself, or drop column="))
        single = self._is_single(inputs)
        items = [inputs] if single else list(inputs)
        if not items:
            return Results()
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
        for key in self.frame_keys:
            out[f"pred_{key}"] = [r.get(key) if r else None for r in results]
        return out

    def _use_bf16(self) -> bool:
        """The one precision rule: bfloat16 where asked, or under "auto" where the hardware runs it natively
        and the task's measured label agreement with float32 allowed it (``auto_bf16``)."""
        return use_bf16(self.precision, self.device, auto_allowed=self.auto_bf16)

    @property
    def runs_in(self) -> str:
        """Which numeric path predictions take, in words (shown in reports and model cards)."""
        return ("bfloat16 for the model body, float32 for the scores" if self._use_bf16()
                else "float32")

    def _autocast(self):
        return autocast(self.device, self._use_bf16())

    def _run(self, items: list, *, batch_size, errors, where: str, progress: bool | None = None, **options) -> Results:
        """The one predict path: preprocess every item first (bad input fails before model work), then batch by
        length. What happened in the call comes back on the Results and is set once on the task at the end."""
        steps = self._route_options(options)
        units, split, bad = self._preprocess_items(items, errors=errors, where=where, **steps["preprocess"])
        results = self._predict_units(units, split, len(items), batch_size=batch_size, progress=progress, steps=steps)
        facts = self._call_facts(units)
        # the checked inputs (decoded clips, images: up to held_inputs_mb) go, and their memory back to the system
        # (2.5 h of clips in one call kept +573 MB after it, the held clips, until the next call reused it)
        del units, split
        HeapTrimmer().now()
        self.skipped = list(bad)
        for name, value in facts.items():   # the task's own per-call facts (speech: packing), also set once
            setattr(self, name, value)
        if bad:
            listed = "; ".join(f"{where} {i}: {msg}" for i, msg in bad[:5])
            warn(f"Skipped {len(bad)} of {len(items)} inputs (their result is None; see .skipped): {listed}"
                 + (" ..." if len(bad) > 5 else ""))
        return Results((Result(r) if isinstance(r, dict) else r for r in results), skipped=bad, **facts)

    def _preprocess_items(self, items: list, *, errors: str, where: str, **options) -> tuple[list, dict, list]:
        """``(key, unit)`` per model unit (key: the item's position, or (position, piece) for Pieces), the
        items split into Pieces, and (position, reason) of the items ``errors="skip"`` left out."""
        units, split, bad = [], {}, []
        held, budget = 0, self.held_inputs_mb * 2**20
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
                continue
            size = self._held_bytes(unit)
            if size and held + size > budget:
                unit = self._release(unit, item, where=f"{where} {i}", options=options)
            else:
                held += size
            units.append((i, unit))
        return units, split, bad

    def _held_bytes(self, unit) -> int:
        """What a checked unit keeps in memory until its batch runs (a decoded image, audio samples)."""
        return int(getattr(unit, "nbytes", 0))

    def _release(self, unit, item, *, where: str, options: dict):
        """The unit, keeping less, for an input past the held-inputs budget: by default the input itself,
        preprocessed again when its batch runs (``_restore``)."""
        return _Deferred(item, where, options, self._length(unit))

    def _restore(self, unit):
        """A unit ready for ``_collate``: a released input preprocessed again (it passed its checks before)."""
        if not isinstance(unit, _Deferred):
            return unit
        try:
            return self._preprocess(unit.item, where=unit.where, **unit.options)
        except AppkitError as exc:
            raise type(exc)(f"{exc}\n(It had passed its checks at the start of this call: did the file change "
                            "while predict ran?)") from None

    def _predict_units(self, units: list, split: dict, n_items: int, *, batch_size, progress, steps: dict) -> list:
        """Results per item (None where nothing was predicted): units batched longest first, Pieces merged."""
        import torch

        from ..widgets.progress import bar   # no tqdm widget in a notebook (ipywidgets imported only in a kernel)

        batch_size = batch_size or self.default_batch_size
        # longest first: similar lengths share a batch (little padding) and memory peaks at once
        units.sort(key=lambda u: -(u[1].length if isinstance(u[1], _Deferred) else self._length(u[1])))
        results: list = [None] * n_items
        parts: dict = {}   # (item, piece) -> result, for inputs split into Pieces
        batches = self._batches(units, batch_size, **steps["batches"])
        show = progress if progress is not None else len(batches) > 3
        trim = HeapTrimmer()     # a long call's memory stays what one batch needs, not what the heap kept
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for batch in bar(batches, desc=f"{self.task}", unit="batch", disable=not show):
                prepared = [self._restore(u) for _, u in batch]
                raw = self._forward(self._to_device(self._collate(prepared)), **steps["forward"])
                for (i, _), res in zip(batch, self._postprocess(raw, prepared, **steps["postprocess"])):
                    if isinstance(i, tuple):
                        parts[i] = res
                    else:
                        results[i] = res
                trim()
        for i, pieces in split.items():
            results[i] = self._merge([parts[(i, k)] for k in range(len(pieces))], pieces, **steps["merge"])
        return results

    def _call_facts(self, units: list) -> dict:
        """A task's own facts about one predict call, from its ``(key, unit)`` list: each becomes an attribute
        of the returned Results and is set once on the task at the end of the call (speech: ``packing``)."""
        return {}

    def _route_options(self, options: dict) -> dict[str, dict]:
        """Each task-specific predict option to the steps that take it (``predict_options``), the way
        transformers' ``_sanitize_parameters`` does: a hook sees only its own options, by keyword."""
        steps: dict[str, dict] = {s: {} for s in PREDICT_STEPS}
        for name, value in options.items():
            for step in self.predict_options[name]:
                steps[step][name] = value
        return steps

    def _batches(self, units: list, batch_size: int) -> list[list]:
        """Cut the length-sorted ``(key, unit)`` list into batches (speech packs short clips here)."""
        return [units[k:k + batch_size] for k in range(0, len(units), batch_size)]

    def _merge(self, results: list, pieces: Pieces):
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
        laptop CPU); "top" trains the last block (EfficientNet-Lite) or the last pretrained layer (BERT-style
        text encoders) and the head on the cached input of that block or layer; "probe" (BERT-style text
        encoders; text's choice on a CPU) fits a regularised linear model on the sentence vector of one
        pretrained layer, the layer and regularisation chosen by 5-fold cross-validation on the training rows,
        and keeps the layers up to it (no epochs, learning rate or validation split); "full" trains every weight;
        "auto" = the task's frozen strategy on a CPU
        or with fewer than 1000 training rows, full on a GPU with more (the run's notes say which and why).
        epochs: None takes the strategy's default (``type(task).training.epochs``: many cheap
        epochs for "head", a few for "full"). With validation data (``eval_data``, or
        ``validation_split``) the weights of the best epoch are kept, not the last, and a classifier's
        confidence scores are calibrated on it (temperature scaling, folded into the saved weights).
        validation_split: None = auto: 20% of the training rows (stratified) for a classifier's
        "head" strategy when there are at least 100 rows and every class has 10 on the held-out side; 0 = none.
        class_weights: "auto" weighs each class by the square root of its rarity (small classes count
        without making the model overconfident), "balanced" by its full rarity, None not at all.
        checkpoints: a checkpoint after epochs (the last two kept) so ``resume=True`` can continue: the
        first and the last, and in between each epoch's unless less than ten times the last write's time
        has passed since it (writing then takes at most about a tenth of the run);
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
        if "top_k" in self.predict_options and getattr(self, "labels", None):
            options.setdefault("top_k", len(self.labels))   # every label's score: the report's curves need them
        results = self._run(list(df[self.input_column]), batch_size=batch_size, errors=errors, where="row",
                            progress=progress, **options)
        return build_report(self, df, results, slices=slices)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, *, include_examples: bool = False) -> Path:
        """A plain transformers folder (safetensors) plus appkit.json and a README.md model card; reload with
        appkit.load(task, path). The card describes the training data without examples unless include_examples=True.
        The folder is written beside its destination and renamed into place, so it is never half-written."""
        from ..folders import atomic_folder
        from ..runtime import process_rank

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


# A result keeps every label's score up to this many labels; beyond, the top MANY_LABELS_TOP_K (as transformers'
# image pipeline), unless top_k says otherwise: all 1000 ImageNet scores as a dict cost 213 KB per image
# (bench/predict_memory.py --task image: 10,000 images grew memory by 2 GB). evaluate() always keeps them all.
ALL_SCORES_MAX_LABELS = 20
MANY_LABELS_TOP_K = 5


class ClassificationTask(Task, TrainsHead, abstract=True):
    """Shared by text and image classification: labels, class weights, softmax results, the report.

    A classifier also says how to find and replace its final layer (``_final_linear``, ``_reset_head``,
    ``_head_matches``): new labels get a new head, and calibration is folded into the final layer."""
    is_classifier: ClassVar[bool] = True
    # head: many cheap epochs, the best one kept (measured on drug reviews: best epochs 11-20 of 30 at 1e-3)
    training: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs={"head": 30, "full": 3}, learning_rate={"head": 1e-3, "full": 5e-5},
        batch_size={"head": 32, "full": 16}, best_metric="eval_macro_f1", logit_metrics=True)
    predict_options: ClassVar[Mapping[str, tuple[str, ...]]] = {"top_k": ("postprocess",)}
    result_keys: ClassVar[tuple[str, ...]] = ("label", "score", "scores")
    frame_keys: ClassVar[tuple[str, ...]] = ("label", "score")
    metric_info: ClassVar[Mapping[str, Metric]] = {
        "accuracy": Metric("share of examples labelled correctly", percent=True),
        "macro_f1": Metric("balance of precision and recall, averaged over classes so small classes count as much "
                           "as big ones"),
        "weighted_f1": Metric("F1 averaged over classes, weighted by their size"),
        "roc_auc": Metric("how well the scores rank the right class first (0.5 = chance, 1 = perfect)"),
        "calibration_error": Metric("gap between the model's confidence and how often it is right (0 = honest)"),
    }

    # -- results
    def _postprocess(self, logits, units, *, top_k: int | None = None):
        import torch

        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        labels = self._predict_labels()
        if top_k is None and len(labels) > ALL_SCORES_MAX_LABELS:
            top_k = MANY_LABELS_TOP_K
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

    @abstractmethod
    def _final_linear(self):
        """The linear layer that produces the logits (temperature scaling is folded into it)."""

    @abstractmethod
    def _reset_head(self, labels: list[str]) -> None:
        """A new, untrained final layer for these labels."""

    @abstractmethod
    def _head_matches(self, labels: list[str]) -> bool:
        """Whether the current final layer has one output per label."""

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

        from ..metrics import classification, expected_calibration_error

        labels = self._predict_labels()
        scores = np.array([[s.get(lab, 0.0) for lab in labels] for s in table["scores"]])
        m = classification(list(table["reference"]), list(table["prediction"]), labels, None if summary else scores)
        if not summary:
            m["calibration_error"] = expected_calibration_error(table["score"].to_numpy(), table["correct"].to_numpy())
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


class TextTargetTask(Task, abstract=True):
    """Shared by speech recognition and translation: the target is text, learnt as token ids (``_label_ids``);
    the epoch kept is the one with the lowest validation loss (``training.best_metric="eval_loss"``)."""

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

    @abstractmethod
    def _label_ids(self, text: str, *, where: str) -> list[int]:
        """One reference text -> the token ids the model learns to write (too long: a DataError)."""

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
