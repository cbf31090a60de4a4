"""Translation: a transformers text-to-text model for one language pair (Marian
``Helsinki-NLP/opus-mt-<src>-<tgt>``, or T5 with its task ``prefix=``) by hub id or folder.

The default, ``appkit-mt-en-de``, ships inside appkit (appkit/models/, README.md there): a small
English->German Marian trained from scratch by scripts/train_mt.py on Debian's human translations
of software (menus, messages, LibreOffice help). Other models: a hub id (it downloads once) or a
folder such as one saved by ``.save()``.
``predict`` takes texts; each result is ``{"translation": str}``. Texts are batched by length,
decoded with the model's own generation settings (``num_beams=`` overrides them) and a budget of
new tokens that grows with the source's length; on CPUs with native bfloat16 under autocast.
A text's budget is its own (batches never mix budgets), so with greedy decoding or beams its result
does not depend on which texts share its batch (up to bf16 rounding where padding differs).
Models that translate between many languages (M2M100, NLLB, mBART-50) need language codes on
both sides of training and generation that appkit does not handle yet: they are refused with a
pointer to one-pair models.

Fine-tuning trains every weight (``strategy="full"``) on ``source`` / ``target`` pairs; the
saved folder is a plain transformers folder (``AutoModelForSeq2SeqLM`` + ``AutoTokenizer`` load it;
transformers 5 removed its translation pipeline).
Evaluation: BLEU and chrF (sacrebleu) overall and per slice, against the baseline of copying the
source unchanged, with the worst sentences' differences highlighted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

import pandas as pd

from ..errors import DataError, ModelError, _cap, _msg
from ..registry import ModelEntry, register_task
from .base import Metric, Pieces, TextTargetTask, TrainingDefaults, pad_labels

_MAX_SOURCE_TOKENS = 512
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+")
_GROWTH = 2.0         # a translation is rarely more than twice its source's length in tokens


def _freeze_fixed_positions(model) -> None:
    """Sinusoidal position tables (Marian, M2M100, ...) are a fixed function that from_pretrained recomputes on
    load; left trainable, fine-tuning moved them and the saved folder loaded as a different model."""
    for module in model.modules():
        if "Sinusoidal" in type(module).__name__:
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)


@register_task("translation")
class Translation(TextTargetTask):
    # appkit's own English->German model ships inside the package (trained from scratch by scripts/train_mt.py
    # on Debian's human translations); hub models, and your own folders
    catalogue: ClassVar[tuple[ModelEntry, ...]] = (
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
    )
    default_model: ClassVar[str | None] = "appkit-mt-en-de"
    input_column = "source"
    target_column = "target"
    default_batch_size = 16
    strategies: ClassVar[tuple[str, ...]] = ("full",)
    load_options: ClassVar[tuple[str, ...]] = ("prefix",)
    predict_options: ClassVar[Mapping[str, tuple[str, ...]]] = {"num_beams": ("forward",),
                                                                "max_new_tokens": ("batches", "forward")}
    training: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs={"full": 3}, learning_rate={"full": 5e-5}, batch_size={"full": 16}, best_metric="eval_loss")
    result_keys: ClassVar[tuple[str, ...]] = ("translation",)
    frame_keys: ClassVar[tuple[str, ...]] = ("translation",)
    metric_info: ClassVar[Mapping[str, Metric]] = {
        "bleu": Metric("how many of the reference translation's word sequences the model wrote (0-100; above ~30 "
                       "is usually understandable)"),
        "chrf": Metric("the same on characters, fairer to word endings and compound words (0-100)"),
    }

    def __init__(self, model, tokenizer, *, prefix: str = "", **kw):
        super().__init__(model, tokenizer, **kw)
        self.prefix = prefix              # T5's task prefix, e.g. "translate English to German: "

    # ------------------------------------------------------------------ loading
    @classmethod
    def _load(cls, source, *, labels, meta, device, prefix=None):
        import torch
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as TEXT_TO_TEXT

        if labels is not None:
            raise DataError(_msg("translation has no labels", fix="drop labels=...; the target texts are what it learns"))
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        if config.model_type not in TEXT_TO_TEXT:
            hint = " (a speech model: appkit.load('speech-recognition', ...))" if "whisper" in config.model_type else ""
            raise ModelError(_msg(f"{str(source)!r} is a {config.model_type} model{hint}, not a text-to-text model",
                                  expected="an encoder-decoder model that writes text, e.g. 'Helsinki-NLP/opus-mt-en-de'",
                                  fix="see appkit.list_models('translation')"))
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=torch.float32)   # fp32 master weights
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        if hasattr(tokenizer, "src_lang") and getattr(model.generation_config, "forced_bos_token_id", None) is None:
            raise ModelError(_msg(f"{str(source)!r} translates between many languages ({type(tokenizer).__name__}); "
                                  "appkit does not handle their language codes yet",
                                  fix="use a model for one language pair, e.g. 'Helsinki-NLP/opus-mt-en-de' "
                                      "(~1,000 pairs: opus-mt-<src>-<tgt>)"))
        _freeze_fixed_positions(model)
        prefix = prefix if prefix is not None else meta.get("prefix", "")
        if config.model_type in ("t5", "mt5", "umt5", "longt5") and not prefix:
            known = [p.get("prefix") for k, p in (getattr(config, "task_specific_params", None) or {}).items()
                     if k.startswith("translation") and p.get("prefix")]
            raise ModelError(_msg(f"{str(source)!r} is a T5 model: it translates only when each text starts with its task",
                                  fix="pass prefix=..., e.g. " + (" or ".join(repr(p) for p in known) if known
                                                                  else "'translate English to German: '")))
        return cls(model, tokenizer, prefix=prefix, labels=None, meta={**meta, "source": str(source)}, device=device,
                   precision="auto")

    @classmethod
    def _catalogue_source(cls, entry):
        from ..models import MODELS_DIR

        folder = MODELS_DIR / entry.name
        if not (folder / "model.safetensors").exists():
            raise ModelError(_msg(f"The packaged model {entry.name!r} is missing from {str(folder)!r}",
                                  fix="reinstall appkit, or rebuild it: python scripts/mt_corpus.py && "
                                      "python scripts/train_mt.py && python scripts/train_mt.py --export " + str(folder)))
        return str(folder)

    # ------------------------------------------------------------------ hooks
    @property
    def max_tokens(self) -> int:
        """Longest source or target in tokens: the model's positions, at most 512."""
        positions = getattr(self.model.config, "max_position_embeddings", None) or _MAX_SOURCE_TOKENS
        return min(_MAX_SOURCE_TOKENS, positions)

    def _preprocess(self, item, *, where: str):
        from ..data import check_text_item

        text = check_text_item(item, where=where)
        if len(self.processor(self.prefix + text).input_ids) <= self.max_tokens:
            return self.prefix + text
        # longer than the model reads: translated sentence by sentence and rejoined (_merge), never cut
        return Pieces(self.prefix + piece for piece in self._split(text, where=where))

    def _split(self, text: str, *, where: str) -> list[str]:
        """Sentences packed into pieces that fit the model; a sentence too long on its own is split between words."""
        room = self.max_tokens - len(self.processor(self.prefix).input_ids)     # the prefix and the end token

        def size(s: str) -> int:
            return len(self.processor(s, add_special_tokens=False).input_ids)

        pieces, cur = [], []
        for sentence in _SENTENCE_END.split(text.strip()):
            parts = [sentence] if size(sentence) <= room else sentence.split()
            for part in parts:
                n = size(part)
                if n > room:                # one "word" longer than the model reads (e.g. a long URL or data)
                    raise DataError(_msg(f"{_cap(where)} holds a word of {n} tokens ({part[:40]!r}...); the model "
                                         f"reads at most {self.max_tokens}",
                                         fix="remove or shorten it (errors='skip' passes over this input)"))
                # the joined text is measured, not the sum of its parts: joining can add a word-start token
                if cur and size(" ".join([*cur, part])) > room:
                    pieces.append(" ".join(cur))
                    cur = []
                cur.append(part)
        return pieces + ([" ".join(cur)] if cur else [])

    def _merge(self, results: list, pieces):
        return {"translation": " ".join(r["translation"] for r in results if r["translation"])}

    def _length(self, unit) -> int:
        return len(unit)

    def _budget(self, n_tokens: int, max_new_tokens: int | None) -> int:
        """New tokens a source of n tokens may produce: its own, never its batch-mates' (rounded up to 16 so
        texts of similar length still share a batch)."""
        if max_new_tokens:
            return min(self.max_tokens, max_new_tokens)
        return min(self.max_tokens, -(-(int(_GROWTH * n_tokens) + 10) // 16) * 16)

    def _batches(self, units: list, batch_size: int, *, max_new_tokens: int | None = None) -> list[list]:
        """Batches of one budget each: beam search keeps a beam until the budget runs out, so a text batched
        with longer ones would otherwise decode differently than alone."""
        if not units:
            return []
        budgets = [self._budget(len(ids), max_new_tokens) for ids in self.processor([u for _, u in units]).input_ids]
        out, cur, budget = [], [], None
        for b, unit in sorted(zip(budgets, units), key=lambda x: -x[0]):     # stable: length order within a budget
            if cur and (b != budget or len(cur) == batch_size):
                out.append(cur)
                cur = []
            cur.append(unit)
            budget = b
        return out + [cur]

    def _collate(self, units):
        return self.processor(units, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")

    def _check_predict_options(self, options: dict, errors: str) -> None:
        super()._check_predict_options(options, errors)
        for key in ("max_new_tokens", "num_beams"):
            v = options.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DataError(_msg(f"{key}={v!r} must be a whole number of at least 1", fix=f"e.g. {key}=4"))
        if (options.get("max_new_tokens") or 0) > self.max_tokens:
            raise DataError(_msg(f"max_new_tokens={options['max_new_tokens']} is more than this model writes "
                                 f"({self.max_tokens} tokens)", fix=f"use at most max_new_tokens={self.max_tokens}"))

    def _forward(self, batch, *, num_beams: int | None = None, max_new_tokens: int | None = None):
        from ..runtime import quiet_transformers

        batch = dict(batch)
        budgets = [self._budget(n, max_new_tokens) for n in batch["attention_mask"].sum(1).tolist()]
        kwargs = {"max_new_tokens": max(budgets), "do_sample": False}   # one budget per batch (_batches)
        if num_beams is not None:
            kwargs["num_beams"] = num_beams
        with quiet_transformers():   # notices about its own generation defaults, nothing a user can act on
            ids = self.model.generate(**batch, **kwargs)
        beams = num_beams or getattr(self.model.generation_config, "num_beams", 1) or 1
        if beams > 1:
            return ids      # beams of a longer budget are not cut: a cut mid-sentence is worse than a longer one
        # greedy: each text's own budget (the decoder's start token + b new tokens; models such as Marian force
        # their end token into the last slot, so a cut there keeps b - 1 words, as a run on its own would)
        forced = getattr(self.model.generation_config, "forced_eos_token_id", None) is not None
        return [seq[:b if forced else b + 1] for seq, b in zip(ids, budgets)]

    def _postprocess(self, ids, units):
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [{"translation": t.strip()} for t in texts]

    # ------------------------------------------------------------------ training
    def _check_training_inputs(self, df: pd.DataFrame, *, where: str) -> None:
        from ..data import check_text

        check_text(list(df[self.input_column]), where=where, column=self.input_column)

    def _label_ids(self, text: str, *, where: str) -> list[int]:
        ids = self.processor(text_target=text).input_ids
        if len(ids) > self.max_tokens:
            raise DataError(_msg(f"{_cap(where)} has a target of {len(ids)} tokens; the model writes at most {self.max_tokens}",
                                 fix="split long documents into sentences or paragraphs, source and target alike"))
        return ids

    def _train_collate(self, units, targets, train: bool):
        return {**self._collate(units), "labels": pad_labels(targets)}

    def _save_meta(self) -> dict:
        return {"prefix": self.prefix}

    # ------------------------------------------------------------------ evaluation
    def _eval_table(self, df: pd.DataFrame, results: list) -> pd.DataFrame:
        import sacrebleu

        refs, hyps = [str(t) for t in df[self.target_column]], [r["translation"] for r in results]
        return pd.DataFrame({"input": [str(x) for x in df[self.input_column]], "reference": refs, "prediction": hyps,
                             "chrf": [sacrebleu.sentence_chrf(h, [r]).score for r, h in zip(refs, hyps)]})

    def _metrics(self, table: pd.DataFrame, summary: bool = False) -> dict:
        from ..metrics import bleu_chrf

        return bleu_chrf(list(table["reference"]), list(table["prediction"]))

    def _report_extras(self, report) -> None:
        from ..metrics import bleu_chrf

        t = report.table
        copied = bleu_chrf(list(t["reference"]), list(t["input"]))
        report.baseline = {"chrF of copying the source unchanged (the bar a translation must clear)": copied["chrf"]}

    def _worst(self, table: pd.DataFrame, n: int) -> pd.DataFrame:
        return table.sort_values("chrf", kind="stable").head(n)[["input", "reference", "prediction", "chrf"]]

    def _worst_html(self, worst: pd.DataFrame) -> str:
        import html

        from ..report import table_html, word_diff_html

        shown = pd.DataFrame({
            "source": [html.escape(s) for s in worst["input"]],
            "reference vs translation": [word_diff_html(r, h, normalise=False)
                                         for r, h in zip(worst["reference"], worst["prediction"])],
            "chrF": worst["chrf"].values,
        })
        return ("<p><del>struck</del>: words of the reference the model did not write; <ins>green</ins>: what it wrote "
                "instead. A different word can still be a good translation: read them, do not only count them.</p>"
                + table_html(shown, raw_cols=("source", "reference vs translation")))
