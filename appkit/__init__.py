"""appkit: fine-tune, predict, evaluate and save pretrained models in a notebook.

Importing appkit is cheap: torch and transformers load only when a model does.
"""
from __future__ import annotations

__all__ = ["load", "list_tasks", "list_models", "compare", "AppkitError", "__version__"]

from ._version import __version__
from .errors import AppkitError
from .registry import list_models, list_tasks


def load(task: str, model: str | None = None, *, labels=None, device: str | None = None, **options):
    """Load a model for ``task``.

    ``model`` is a catalogue name (``appkit.list_models(task)``), a local folder
    (for example one written by ``save``) or a hub id (needs internet once).
    ``labels`` names the classes of a classifier. Task-specific options (for
    example ``label_descriptions`` for text, ``language`` for speech) are listed
    in the task's documentation; an unknown option is an error.
    """
    from .registry import get_task_class

    cls = get_task_class(task)
    return cls.from_pretrained(model, labels=labels, device=device, **options)


def __getattr__(name: str):
    if name == "compare":   # imported on first use: pandas is not needed to import appkit
        from .evaluation import compare

        return compare
    raise AttributeError(f"module 'appkit' has no attribute {name!r}")
