"""Every user mistake raises an AppkitError subclass.

Messages are written for a domain analyst: what was wrong, where (row, file,
column), what was expected and how to fix it. Build them with `_msg` so they
all read the same way.
"""
from __future__ import annotations

import difflib


class AppkitError(Exception):
    """Base class: catch this to handle any appkit input or usage error."""


class UnknownNameError(AppkitError, KeyError):
    """An unknown task, model, label, strategy or column name."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(AppkitError, ValueError):
    """The data given to predict / fine_tune / evaluate cannot be used as it is."""


class MediaError(DataError):
    """An image or audio item cannot be decoded or is unusable (corrupt, silent, too large)."""


class ModelError(AppkitError):
    """A model cannot be loaded, saved or used as asked."""


class NotTrainedError(AppkitError):
    """An operation needs a fine-tuned model (or labels) that this one lacks."""


def _cap(where: str) -> str:
    """'row 3 of the training data' -> 'Row 3 of the training data' (the start of a message)."""
    return where[:1].upper() + where[1:]


def _msg(what: str, *, where: str | None = None, expected: str | None = None, fix: str | None = None) -> str:
    parts = [what.rstrip(".") + "."]
    if where:
        parts.append(f"Where: {where}.")
    if expected:
        parts.append(f"Expected: {expected}.")
    if fix:
        parts.append(f"How to fix: {fix}.")
    return " ".join(parts)


def unknown_name(kind: str, name: object, available) -> UnknownNameError:
    """`Unknown task 'sentiment'. Available: [...]. Did you mean 'text-classification'?`"""
    available = sorted(str(a) for a in available)
    text = f"Unknown {kind} {name!r}. Available: {available}."
    close = difflib.get_close_matches(str(name), available, n=1, cutoff=0.4)
    if not close:  # substring match catches 'text' -> 'text-classification'
        close = [a for a in available if str(name).lower() in a.lower()][:1]
    if close:
        text += f" Did you mean {close[0]!r}?"
    return UnknownNameError(text)


class AppkitWarning(UserWarning):
    """A notice about the user's data or run (overlap between train and test, skipped inputs, ...)."""


def warn(message: str, category: type[Warning] = AppkitWarning) -> None:
    """Warn, pointing at the user's own line rather than at appkit's internals: the stack level is the
    first frame outside the appkit package (Python 3.12's skip_file_prefixes, by hand for 3.10+)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)   # stacklevel 2 = warn's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
