"""Runtime choices, in one leaf module: which device, which precision, how quiet transformers is, which process
of a distributed run this is, and what identifies a set of weights.

Predict, fine_tune, export and the benchmarks all ask here, so they cannot disagree (the bf16 rule once
lived in three places). A leaf: it imports nothing from appkit but errors, so any module may import it.
"""
from __future__ import annotations

import contextlib
import os

from .errors import ModelError, _msg, unknown_name

PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_device(device: str | None) -> str:
    """None -> "cuda" when a GPU is visible, else "cpu"; a GPU asked for but absent is an error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(_msg(f"device={device!r} was asked for but no GPU is visible",
                              fix="use device='cpu' or leave device unset"))
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    return precision


def bf16_native(device: str) -> bool:
    """Whether the hardware computes bfloat16 natively (a GPU that says so; a CPU with AVX512-BF16 / AMX)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN says whether the CPU has native bf16
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def use_bf16(precision: str, device: str, *, auto_allowed: bool) -> bool:
    """The one precision rule, for predict and training alike: bfloat16 where asked (precision="bfloat16"),
    or under "auto" where the hardware runs it natively and the task's measured label agreement with float32
    allowed it (``auto_allowed``, a task's ``auto_bf16``)."""
    if precision == "bfloat16":
        return True
    return precision == "auto" and auto_allowed and bf16_native(device)


def autocast(device: str, enabled: bool):
    """torch.autocast to bfloat16 on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


def weights_key(model) -> tuple:
    """Changes whenever a weight of ``model`` changes: an optimizer step or ``load_state_dict`` writes in place and
    bumps the tensor's version; a replaced head is a new tensor. Inference copies (a bf16 copy of the model) are
    kept under it and remade when it changes, so they never serve stale weights."""
    return (id(model), tuple((id(p), p._version) for p in model.parameters()))


def bf16_copy(module):
    """A bfloat16 copy of ``module`` for inference (the float32 original stays the one that trains and saves)."""
    import copy

    import torch

    return copy.deepcopy(module).to(torch.bfloat16).eval()


class _StopForward(Exception):
    pass


def input_of(model, module, batch):
    """What ``module`` receives when ``model`` runs ``batch``; the forward stops there (the layers above would be
    computed for nothing)."""
    captured = {}

    def catch(_, args):
        captured["x"] = args[0]
        raise _StopForward

    handle = module.register_forward_pre_hook(catch)
    try:
        model(**batch)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["x"]


@contextlib.contextmanager
def quiet_transformers(*, progress_bars: bool = False):
    """No 'Loading weights' bars or 'newly initialized' notices: appkit says what matters itself.
    ``progress_bars=True`` leaves transformers' bars as they are (training shows its own display).

    Nor a prompt: for a model that asks to run its own code, transformers would ask "run the custom
    code? [y/N]" in a notebook; with the timeout at 0 it refuses at once (appkit never runs model code)."""
    from transformers import dynamic_module_utils
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    timeout = dynamic_module_utils.TIME_OUT_REMOTE_CODE
    hf_logging.set_verbosity_error()
    if not progress_bars:
        hf_logging.disable_progress_bar()
    dynamic_module_utils.TIME_OUT_REMOTE_CODE = 0
    try:
        yield
    finally:
        dynamic_module_utils.TIME_OUT_REMOTE_CODE = timeout
        hf_logging.set_verbosity(verbosity)
        if bars and not progress_bars:
            hf_logging.enable_progress_bar()


def process_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch (set in the environment before the process group
    exists); (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def hash_weights(state: dict) -> str:
    """A hash of every tensor of a state dict (names and float32 values): feature caches and ONNX exports use it
    to tell weights apart."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class HeapTrimmer:
    """Gives freed heap memory back to the system during a long predict call, at most every ``every_s``.

    glibc keeps what torch frees in its heaps, and batches of different shapes fragment them: one predict call
    over 0.25 h of short clips in 4 parts grew RSS 895 -> 1136 MB after each part, while ``malloc_trim(0)``
    brought every one back to 686 MB (Whisper tiny.en, float32). A no-op where libc has no ``malloc_trim``.
    """

    def __init__(self, every_s: float = 2.0):
        import time

        self.every_s, self.last, self._clock = every_s, time.monotonic(), time.monotonic
        self._trim = _malloc_trim()

    def __call__(self) -> None:
        if self._clock() - self.last >= self.every_s:
            self.now()

    def now(self) -> None:
        """Give the freed memory back at once (the end of a call)."""
        if self._trim is not None:
            self._trim(0)
        self.last = self._clock()


def _malloc_trim():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):     # musl and others have no malloc_trim
        return None
