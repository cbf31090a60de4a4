"""See a widget Button's click while a cell is still running (the Stop button during ``fine_tune``).

A running cell blocks the kernel's main thread, so a widget's ``on_click`` runs only after the cell ends.
ipykernel 7 receives every shell message in its own thread (the shell-channel thread) before handing it
to the main thread; ``watch_clicks`` adds an observer there that sets a ``threading.Event`` when a click
for a watched button passes by. The message itself goes on unchanged, so the kernel's order of work (the
next cells of "Run All", completions) is untouched and ``on_click`` still runs after the cell as usual.

jupyter-ui-poll read clicks by running the kernel's message loop from inside the cell; with ipykernel 7.4
it handles nothing (the kernel has no ``do_one_iteration`` any more), which left the Stop button dead.
"""
from __future__ import annotations

import threading

_watched: dict[str, threading.Event] = {}    # comm id of a Button -> set when a click for it arrives


def _kernel():
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None or getattr(kernel, "shell_stream", None) is None or not hasattr(kernel, "shell_channel_thread_main"):
        return None      # not an ipykernel 7 kernel (or a kernel without its shell-channel thread)
    return kernel


def supported() -> bool:
    """True when clicks can be seen while a cell runs (an ipykernel >= 7 kernel)."""
    return _kernel() is not None


def watch_clicks(button) -> threading.Event | None:
    """An Event set by each click on ``button`` (an ipywidgets Button), even while a cell runs; None if unsupported."""
    kernel = _kernel()
    if kernel is None or button.comm is None:
        return None
    _install(kernel)
    event = threading.Event()
    _watched[button.comm.comm_id] = event
    return event


def unwatch(button) -> None:
    if button.comm is not None:
        _watched.pop(button.comm.comm_id, None)


def _install(kernel) -> None:
    """Route the shell stream through ``_observe`` once per kernel (the swap runs in the shell-channel thread,
    which owns the stream)."""
    if getattr(kernel, "_appkit_click_observer", False):
        return
    forward = kernel.shell_channel_thread_main

    def on_recv(msg):
        if _watched:
            _observe(kernel, msg)
        return forward(msg)

    swapped = threading.Event()

    def swap():
        kernel.shell_stream.on_recv(on_recv, copy=False)
        swapped.set()

    kernel.shell_channel_thread.io_loop.add_callback(swap)
    if swapped.wait(10):
        kernel._appkit_click_observer = True


def _observe(kernel, msg) -> None:
    try:
        _, frames = kernel.session.feed_identities(msg, copy=False)
        # content=False: a peek, as the shell-channel thread itself does; the signature is not recorded,
        # so the main thread's own deserialisation of this message does not see a duplicate
        header = kernel.session.deserialize(frames, content=False, copy=False)
        if header["header"].get("msg_type") != "comm_msg":
            return
        content = kernel.session.unpack(header["content"])
        data = content.get("data") or {}
        event = _watched.get(content.get("comm_id"))
        if event is not None and data.get("method") == "custom" and (data.get("content") or {}).get("event") == "click":
            event.set()
    except Exception:   # an unreadable message is the kernel's to report; the observer never blocks it
        kernel.log.debug("appkit click observer could not read a shell message", exc_info=True)
