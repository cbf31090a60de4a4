"""Model folders: safe to load (safetensors only, no model code, complete) and written atomically.

A folder is written under a temporary sibling name holding a ``.appkit-partial`` marker and renamed
into place only when complete, so a process killed while saving leaves either the old folder or
the new one, never a mixture; a folder that still has the marker is refused with that reason.
Loading never unpickles (pickle files can run any code) and never runs a model's own Python code.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .errors import ModelError, _msg

PARTIAL_MARKER = ".appkit-partial"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model_folder(path: Path) -> None:
    """Refuse a half-written folder, pickle-only weights, and a model that needs its own code."""
    if (path / PARTIAL_MARKER).exists():
        raise ModelError(_msg(f"The folder {str(path)!r} is incomplete: it was still being written when the process "
                              "saving it stopped", fix="save the model again (the earlier save, if any, is unchanged)"))
    files = [p for p in path.iterdir() if p.is_file()]
    if not any(p.suffix == ".safetensors" for p in files):
        pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(_msg(
                f"The folder {str(path)!r} holds its weights only as pickle files ({', '.join(pickles)}), which can run "
                "any code when they are opened, so appkit does not open them",
                expected="model.safetensors",
                fix=f"if you trust where it came from, convert it once: python -c \"import torch; from safetensors.torch "
                    f"import save_file; sd = torch.load('{path / pickles[0]}', weights_only=True); save_file({{k: "
                    f"v.clone().contiguous() for k, v in sd.items()}}, '{path / 'model.safetensors'}')\" "
                    "(weights_only=True refuses anything but tensors), then load the folder again"))
    config = path / "config.json"
    if config.exists():
        _check_config(config)


def _check_config(config: Path) -> None:
    from transformers import CONFIG_MAPPING

    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(_msg(f"{str(config)!r} is not valid JSON ({exc})",
                              fix="restore the file from the model's original source")) from None
    model_type = str(cfg.get("model_type", ""))
    known = model_type in CONFIG_MAPPING or model_type.startswith("appkit-")
    if cfg.get("auto_map") and not known:
        # a known architecture loads with transformers' own code and its auto_map is ignored
        raise ModelError(_msg(
            f"The model in {str(config.parent)!r} (type {model_type!r}) needs its own Python code to run "
            f"(config.json names {sorted(cfg['auto_map'].values())[:3]}); appkit never runs code from a model folder",
            expected="a model whose architecture transformers ships (BERT, ViT, Whisper, Marian, ...)",
            fix="pick such a model; see appkit.list_models()"))


def read_meta(path: Path, name: str = "appkit.json") -> dict:
    try:
        meta = json.loads((path / name).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(_msg(f"{str(path / name)!r} is damaged ({exc})",
                              fix="save the model again, or delete appkit.json to load it as a plain transformers folder")) from None
    if not isinstance(meta, dict):
        raise ModelError(_msg(f"{str(path / name)!r} does not hold a JSON object", fix="save the model again"))
    return meta


@contextlib.contextmanager
def atomic_folder(path: Path, *, is_ours=lambda p: (p / "appkit.json").exists()):
    """Yield a temporary sibling folder to write into; on success it replaces ``path`` in one rename.

    An existing ``path`` is replaced only if it is empty or ``is_ours`` (an earlier save): a folder
    holding other files is never deleted. On any error the temporary folder is removed and ``path``
    is left as it was.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelError(_msg(f"Cannot save to {str(path)!r}: it is a file", expected="a folder path (new or an earlier save)",
                              fix="choose another name, e.g. 'models/my-model'"))
    if path.is_dir() and any(path.iterdir()) and not is_ours(path):
        raise ModelError(_msg(f"Cannot save to {str(path)!r}: the folder already holds other files, which saving would replace",
                              fix="save into a new or empty folder, e.g. 'models/my-model'"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ModelError(_msg(f"Cannot save to {str(path)!r}: a part of that path is a file, not a folder",
                              fix="choose a path whose parent folders are folders")) from None
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    (tmp / PARTIAL_MARKER).write_text("appkit was writing this folder; if it is still here, that write did not finish\n")
    try:
        yield tmp
        (tmp / PARTIAL_MARKER).unlink()
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(old, path)      # put the earlier save back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(_msg(f"Could not write {str(path)!r}: {exc.strerror or exc}",
                              fix="check the disk space and that you may write there; nothing was changed")) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, write) -> None:
    """``write(tmp_path)`` then rename: a reader never sees half a file (feature caches, checkpoints)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def package_folder(module: str) -> Path | None:
    """The folder of an installed package, found by path without importing it (weight-only packages hold no
    code appkit needs, and importing some changes global state, e.g. silero_vad sets torch to one thread).
    None when it is not installed; each caller says in its own words how to install it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
