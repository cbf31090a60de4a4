"""ipywidgets for the notebook: a try-it demo, an error browser, and live training (``progress``).

These plug into the public contract: ``demo`` calls ``task.predict``, ``explore`` reads an
EvalReport snapshot, and the live training widget is a transformers TrainerCallback that the
engine adds for a notebook. Nothing in the engine or the tasks depends on ipywidgets.
"""
from __future__ import annotations

from .browse import Explorer, explore
from .demo import Demo, demo

__all__ = ["demo", "explore", "Demo", "Explorer"]
