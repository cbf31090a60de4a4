"""ONNX export of text and image classifiers, checked against torch, and predicting through onnxruntime.

``task.export_onnx(folder)`` writes a complete saved model (``save()``: weights, tokenizer or image
processor, appkit.json) plus ``model.onnx`` (inputs as the task's collate makes them, output
``logits``; batch and sequence length dynamic). Before it returns, onnxruntime runs the file on
check inputs and its logits are compared with torch in float32: the largest absolute difference and
how often the labels agree are recorded in appkit.json under ``onnx`` (and an export whose
difference exceeds ``TOLERANCE`` is an error). ``appkit.load(task, folder, backend="onnx")`` then
predicts through onnxruntime with appkit's own preprocessing, batching and results.

Only trained classifiers export: a zero-shot text model decides by comparing with the label
names at predict time (fine-tune it first); speech and translation generate token by token,
which one ONNX graph does not cover.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

from .errors import ModelError, NotTrainedError, _msg

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-3          # largest absolute logit difference onnxruntime vs torch float32 that passes
EXPORTABLE = ("text-classification", "image-classification")
_CHECK_TEXTS = ["ok", "The tablets worked but the nausea in the first week was awful.", "great",
                "I would not take this again: headaches, dizziness and no effect on the pain at all, " * 3]


def weights_key(model) -> str:
    """A hash of every weight, so an ONNX file exported from other weights is never used by mistake."""
    from .runtime import hash_weights

    return hash_weights(model.state_dict())


def _check_exportable(task) -> None:
    if task.task not in EXPORTABLE:
        raise ModelError(_msg(f"ONNX export covers {list(EXPORTABLE)}, not {task.task}",
                              where="speech recognition and translation generate text token by token",
                              fix="serve this model with appkit serve, which runs it in torch"))
    if getattr(task, "backend", "torch") == "onnx":
        raise ModelError(_msg("This model already predicts through ONNX", fix="export from the torch model: load it without backend='onnx'"))
    if getattr(task, "mode", "trained") != "trained" or not task.labels:
        raise NotTrainedError(_msg(
            f"Only a trained classifier can be exported; this {task.task} model is {getattr(task, 'mode', 'untrained')}",
            where="a zero-shot text model compares with the label names at predict time",
            fix="fine_tune it on labelled data first, then export"))


def _check_inputs(task) -> list[dict]:
    """A few batches made by the task's own collate: the export's example and the parity check's inputs."""
    import numpy as np

    if task.task == "text-classification":
        return [dict(task._collate(_CHECK_TEXTS)), dict(task._collate(_CHECK_TEXTS[:1]))]
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64 + 16 * i, 80, 3), dtype=np.uint8)) for i in range(5)]
    units = [task._preprocess(im, where=f"check image {i}") for i, im in enumerate(images)]
    return [dict(task._collate(units)), dict(task._collate(units[:1]))]


class _Logits:
    """model(**named inputs).logits as a module with positional inputs, the form torch.onnx.export takes."""

    def __new__(cls, model, names: list[str]):
        import torch

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return self.model(**dict(zip(names, args))).logits

        return Logits()


def export_onnx(task, folder, *, opset: int = 17) -> dict:
    """Write ``folder`` (a saved model + model.onnx) and return the parity check's figures."""
    import numpy as np
    import torch

    _check_exportable(task)
    folder = Path(folder)
    task.save(folder)
    batches = _check_inputs(task)
    names = list(batches[0])
    sequence = {1: "sequence"} if task.task == "text-classification" else {}
    axes = {n: {0: "batch", **sequence} for n in names} | {"logits": {0: "batch"}}
    model = task.model.to("cpu").float().eval()
    wrapper = _Logits(model, names).eval()
    example = tuple(batches[0][n].cpu() for n in names)   # padded: the mask really masks in the traced graph
    with torch.no_grad(), warnings.catch_warnings():   # tracer notes about shapes fixed at export: expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(folder / ONNX_FILE), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    model.eval()
    session = _session(folder / ONNX_FILE)
    diffs, agree, n = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            ref = model(**{k: v.cpu() for k, v in batch.items()}).logits.float().numpy()
            got = session.run(["logits"], {k: v.cpu().numpy() for k, v in batch.items()})[0]
            diffs.append(float(np.abs(ref - got).max()))
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            n += len(ref)
    task.model.to(task.device)
    check = {"file": ONNX_FILE, "inputs": names, "opset": opset, "max_abs_diff": max(diffs),
             "labels_agree": agree / n, "checked": n, "weights": weights_key(model)}
    if check["max_abs_diff"] > TOLERANCE or agree != n:
        raise ModelError(_msg(f"The exported ONNX model does not reproduce torch: largest logit difference "
                              f"{check['max_abs_diff']:.2e} (limit {TOLERANCE:g}), labels agree on {agree} of {n}",
                              where=str(folder / ONNX_FILE), fix="report this model's type; keep using the torch model"))
    meta_path = folder / "appkit.json"
    meta = json.loads(meta_path.read_text())
    meta["onnx"] = check
    meta_path.write_text(json.dumps(meta, indent=2, default=str))
    return check


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(_msg("onnxruntime is not installed", fix="pip install onnxruntime")) from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def find_onnx(folder) -> tuple[Path, dict]:
    """model.onnx in the folder, or in its onnx/ sub-folder (where `appkit export` puts it)."""
    for base in (Path(folder), Path(folder) / "onnx"):
        if (base / ONNX_FILE).exists():
            meta_file = base / "appkit.json"
            meta = json.loads(meta_file.read_text()).get("onnx", {}) if meta_file.exists() else {}
            return base / ONNX_FILE, meta
    raise ModelError(_msg(f"No {ONNX_FILE} in {str(folder)!r} or its onnx/ folder",
                          fix=f"export it first: appkit export {folder} --format onnx (or task.export_onnx(folder))"))


class OnnxModel:
    """Stands in for the torch model in predict: same named inputs, ``.logits`` out, from onnxruntime.

    The torch model stays behind it for its config and for save(); training through it is refused."""

    def __init__(self, session, torch_model, names: list[str]):
        self.session, self.torch_model, self.names = session, torch_model, names

    def __call__(self, **batch):
        import torch

        feed = {k: batch[k].cpu().numpy() for k in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise ModelError(_msg("A model loaded with backend='onnx' cannot be fine-tuned",
                                  fix="load it without backend='onnx', fine-tune, then export again"))
        return self

    def __getattr__(self, name):   # config, save_pretrained, state_dict ... come from the torch model
        return getattr(self.torch_model, name)


def use_onnx(task, folder) -> None:
    """Switch a loaded task to predict through the model.onnx saved with it."""
    _check_exportable(task)
    path, meta = find_onnx(folder)
    if meta.get("weights") and meta["weights"] != weights_key(task.model):
        raise ModelError(_msg(f"{str(path)!r} was exported from other weights than the model in {str(folder)!r}",
                              fix=f"export again: appkit export {folder} --format onnx"))
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    task.model = OnnxModel(session, task.model, names)
    task.backend = "onnx"
    task.precision = "float32"    # no autocast: onnxruntime runs the graph as exported
