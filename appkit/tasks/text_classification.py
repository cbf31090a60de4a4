"""Text classification.

Out of the box (before any training) the packaged MiniLM encoder predicts
**zero-shot**: the text's embedding is compared with the embeddings of the label
names (or ``label_descriptions``) and the most similar label wins. That gives a
sensible first answer; ``fine_tune`` then trains the model's own classification
head (``strategy="head"``) or the whole model (``"full"``), after which the saved
folder is a plain ``BertForSequenceClassification`` that ``transformers.pipeline``
loads too.
"""
from __future__ import annotations

import importlib
from typing import ClassVar

from ..errors import DataError, ModelError, _msg
from ..registry import register_task
from .base import ClassificationTask

_ZERO_SHOT_TEMPERATURE = 20.0  # cosine similarities sit in a narrow band; sharpen them into probabilities


@register_task("text-classification")
class TextClassification(ClassificationTask):
    input_column = "text"
    target_column = "label"
    default_batch_size = 64
    load_options: ClassVar[tuple[str, ...]] = ("label_descriptions", "max_length")

    def __init__(self, model, tokenizer, *, mode: str, label_descriptions: dict | None = None,
                 max_length: int = 256, **kw):
        super().__init__(model, tokenizer, **kw)
        self.mode = mode                      # "zero-shot" | "trained"
        self.label_descriptions = label_descriptions or {}
        self.max_length = max_length
        self._label_emb = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def _catalogue_source(cls, entry):
        return importlib.import_module(entry.package).get_model_path()

    @classmethod
    def _load(cls, source, *, labels, meta, device, label_descriptions=None, max_length=None):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        own_labels = [config.id2label[i] for i in range(len(config.id2label))] if is_classifier else None
        mode = meta.get("mode") or ("trained" if is_classifier else "zero-shot")
        fixed = labels is not None or bool(meta.get("labels_fixed"))
        if labels is None:
            labels = meta.get("labels") or own_labels
        elif own_labels is not None and labels != own_labels:
            mode = "zero-shot"  # new classes: the old head cannot answer them until fine-tuned
        kwargs = {}
        if labels:
            kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                      "label2id": {lab: i for i, lab in enumerate(labels)}, "ignore_mismatched_sizes": True}
        try:  # base.from_pretrained silences "newly initialized weights": that head is ours to train
            # float32 master weights whatever the checkpoint's dtype (transformers 5 keeps fp16/bf16 files
            # in their dtype): training needs them, and bf16 speed comes from autocast instead
            model = AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.float32, **kwargs)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        meta = {**meta, "source": str(source), "labels_fixed": fixed}
        descriptions = label_descriptions if label_descriptions is not None else meta.get("label_descriptions")
        max_length = _check_max_length(max_length or meta.get("max_length"), config, tokenizer)
        # saved with the model, so a plain pipeline(..., truncation=True) cuts texts where appkit does
        tokenizer.model_max_length = max_length
        inst = cls(model, tokenizer, mode=mode, labels=labels, meta=meta, device=device, precision="auto",
                   label_descriptions=descriptions, max_length=max_length)
        inst._check_descriptions()
        return inst

    def _check_descriptions(self) -> None:
        if not self.label_descriptions:
            return
        if not isinstance(self.label_descriptions, dict):
            raise DataError(_msg("label_descriptions must be a dict", expected="{'label': 'a sentence describing it'}"))
        unknown = set(self.label_descriptions) - set(self.labels or [])
        if unknown:
            raise DataError(_msg(f"label_descriptions names {sorted(unknown)}, which are not labels",
                                 where=f"labels: {self.labels}", fix="use the same names as labels=[...]"))

    # ------------------------------------------------------------------ hooks
    def _preprocess(self, item, *, where: str, **_):
        from ..data import check_text_item

        return check_text_item(item, where=where)

    def _length(self, unit) -> int:
        return len(unit)

    def _collate(self, units):
        return self.processor(units, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def _forward(self, batch, **_):
        if self.mode == "zero-shot":
            return self._zero_shot_logits(batch)
        return self.model(**batch).logits

    def _train_collate(self, units, targets, train: bool):
        import torch

        batch = dict(self._collate(units))
        batch["labels"] = torch.tensor(targets, dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ zero-shot
    def _encoder(self):
        return self.model.base_model

    def _embed(self, batch):
        """Mean-pooled, normalised sentence embedding (how the MiniLM sentence encoder was trained)."""
        import torch.nn.functional as F

        hidden = self._encoder()(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)

    def _zero_shot_logits(self, batch):
        labels = self._predict_labels()
        if self._label_emb is None:
            texts = [self.label_descriptions.get(lab, lab) for lab in labels]
            self._label_emb = self._embed(self._to_device(self._collate(texts)))
        return _ZERO_SHOT_TEMPERATURE * self._embed(batch) @ self._label_emb.T

    # ------------------------------------------------------------------ head strategy
    def _features(self, batch):
        """The first token's last hidden state: the input of the model's own classification head."""
        return self._encoder()(**batch).last_hidden_state[:, 0]

    def _head(self):
        return _SequenceHead(self.model)

    def _head_matches(self, labels) -> bool:
        return self.model.config.num_labels == len(labels)

    def _reset_head(self, labels: list[str]) -> None:
        import torch

        cfg = self.model.config
        cfg.num_labels = len(labels)
        self._set_config_labels(labels)
        old = _classifier_linear(self.model)
        new = torch.nn.Linear(old.in_features, len(labels)).to(old.weight.device)
        cfg_std = getattr(cfg, "initializer_range", 0.02)
        torch.nn.init.normal_(new.weight, std=cfg_std)
        torch.nn.init.zeros_(new.bias)
        _set_classifier_linear(self.model, new)
        self._label_emb = None

    def _model_key(self) -> str:
        return f"{super()._model_key()}-{self.max_length}"

    def _feature_state(self) -> dict:
        # the pooler belongs to the head that strategy="head" trains; features come before it
        return {k: v for k, v in self._encoder().state_dict().items() if not k.startswith("pooler.")}

    def _save_meta(self) -> dict:
        return {"mode": self.mode, "label_descriptions": self.label_descriptions or None, "max_length": self.max_length,
                "labels_fixed": bool(self.labels)}


def _check_max_length(asked, config, tokenizer) -> int:
    """Texts are cut at 256 tokens by default, never past the model's position embeddings (which would crash)."""
    limits = [n for n in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length) if n and n < 100_000]
    limit = min(limits) if limits else 512
    if asked is None:
        return min(256, limit)
    if not isinstance(asked, int) or isinstance(asked, bool) or not 8 <= asked <= limit:
        raise DataError(_msg(f"max_length={asked!r} does not fit this model", expected=f"a whole number from 8 to {limit}",
                             fix=f"e.g. max_length={min(256, limit)}"))
    return asked


def _classifier_linear(model):
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if head is None:
        raise ModelError(_msg(f"{type(model).__name__} has no classifier layer appkit knows",
                              fix="use strategy='full' or a BERT/RoBERTa/DistilBERT-style model"))
    if hasattr(head, "out_proj"):  # RoBERTa-style head: dense -> out_proj
        return head.out_proj
    return head


def _set_classifier_linear(model, new) -> None:
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if hasattr(head, "out_proj"):
        head.out_proj = new
    elif hasattr(model, "classifier"):
        model.classifier = new
    else:
        model.score = new


class _SequenceHead:
    """The model's own head, applied to cached first-token features: training it trains the saved model."""

    def __new__(cls, model):
        import torch

        class Head(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                kind = model.config.model_type
                base = model.base_model
                if getattr(base, "pooler", None) is not None and hasattr(model, "classifier"):
                    self.kind = "pooler"          # BERT, ALBERT, ...: tanh pooler on [CLS], then a linear layer
                    self.pooler, self.dropout, self.classifier = base.pooler, model.dropout, model.classifier
                elif kind == "distilbert":
                    self.kind = "distilbert"
                    self.pre, self.dropout, self.classifier = model.pre_classifier, model.dropout, model.classifier
                elif hasattr(getattr(model, "classifier", None), "out_proj"):
                    self.kind = "sequence"        # RoBERTa / XLM-R / ELECTRA-style heads read position 0 themselves
                    self.classifier = model.classifier
                else:
                    raise ModelError(_msg(f"strategy='head' does not know the head of {type(model).__name__}",
                                          fix="use strategy='full'"))

            def forward(self, features):
                if self.kind == "pooler":
                    return self.classifier(self.dropout(self.pooler(features.unsqueeze(1))))
                if self.kind == "distilbert":
                    return self.classifier(self.dropout(torch.relu(self.pre(features))))
                return self.classifier(features.unsqueeze(1))

        return Head(model)
