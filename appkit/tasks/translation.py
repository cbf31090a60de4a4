"""Translation: any transformers sequence-to-sequence model (Marian ``Helsinki-NLP/opus-mt-*``, BART,
T5, M2M100, NLLB) by hub id or folder.

No neural text-to-text translation model is packaged offline (shared/MODELS.md), so the task has
no default model: name one (it downloads once), or a folder such as one saved by ``.save()``.
``predict`` takes texts; each result is ``{"translation": str}``. Texts are batched by length,
decoded with the model's own generation settings (``num_beams=`` overrides them) and a budget of
new tokens that grows with the source's length; on CPUs with native bfloat16 under autocast.
Models that translate between many languages (M2M100, NLLB, mBART) take ``src_lang=`` /
``tgt_lang=`` in their own codes (e.g. ``"deu_Latn"`` for NLLB, ``"de"`` for M2M100).

Fine-tuning trains every weight (``strategy="full"``) on ``source`` / ``target`` pairs; the
saved folder is a plain transformers folder (``AutoModelForSeq2SeqLM`` + ``AutoTokenizer`` load it;
transformers 5 removed its translation pipeline).
Evaluation: BLEU and chrF (sacrebleu) overall and per slice, against the baseline of copying the
source unchanged, with the worst sentences' differences highlighted.
"""
from __future__ import annotations

from typing import ClassVar

import pandas as pd

from ..errors import DataError, ModelError, _cap, _msg
from ..registry import register_task
from .base import TextTargetTask, pad_labels

_MAX_SOURCE_TOKENS = 512
_GROWTH = 2.0         # a translation is rarely more than twice its source's length in tokens


@register_task("translation")
class Translation(TextTargetTask):
    input_column = "source"
    target_column = "target"
    default_batch_size = 16
    strategies: ClassVar[tuple[str, ...]] = ("full",)
    load_options: ClassVar[tuple[str, ...]] = ("src_lang", "tgt_lang")
    predict_options: ClassVar[tuple[str, ...]] = ("num_beams", "max_new_tokens", "tgt_lang")
    default_learning_rate: ClassVar[dict] = {"full": 5e-5}
    default_train_batch_size: ClassVar[dict] = {"full": 16}
    default_epochs: ClassVar[dict] = {"full": 3}

    def __init__(self, model, tokenizer, *, src_lang: str | None = None, tgt_lang: str | None = None, **kw):
        super().__init__(model, tokenizer, **kw)
        self.src_lang, self.tgt_lang = src_lang, tgt_lang

    # ------------------------------------------------------------------ loading
    @classmethod
    def _load(cls, source, *, labels, meta, device, src_lang=None, tgt_lang=None):
        import torch
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

        if labels is not None:
            raise DataError(_msg("translation has no labels", fix="drop labels=...; the target texts are what it learns"))
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        if not getattr(config, "is_encoder_decoder", False):
            raise ModelError(_msg(f"{str(source)!r} is a {config.model_type} model, not a sequence-to-sequence model",
                                  expected="an encoder-decoder model that writes text, e.g. 'Helsinki-NLP/opus-mt-en-de'",
                                  fix="see appkit.list_models('translation')"))
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=torch.float32)   # fp32 master weights
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        inst = cls(model, tokenizer, src_lang=src_lang or meta.get("src_lang"), tgt_lang=tgt_lang or meta.get("tgt_lang"),
                   labels=None, meta={**meta, "source": str(source)}, device=device, precision="auto")
        inst._set_languages(inst.tgt_lang)
        return inst

    def _set_languages(self, tgt_lang) -> int | None:
        """Many-language models: the tokenizer reads src_lang; generation starts with tgt_lang's token."""
        if self.src_lang is not None:
            if not hasattr(self.processor, "src_lang"):
                raise ModelError(_msg(f"src_lang={self.src_lang!r} was given, but this model translates one language pair",
                                      fix="drop src_lang= (and tgt_lang=); they are for M2M100, NLLB or mBART models"))
            self.processor.src_lang = self.src_lang
        if tgt_lang is None:
            return None
        tok = self.processor
        code = getattr(tok, "lang_code_to_id", {}).get(tgt_lang)
        if code is None:
            ids = tok.convert_tokens_to_ids([tgt_lang, f"__{tgt_lang}__"])
            code = next((i for i in ids if i is not None and i != tok.unk_token_id), None)
        if code is None:
            raise ModelError(_msg(f"tgt_lang={tgt_lang!r} is not a language this model knows",
                                  fix="use the model's own code, e.g. 'deu_Latn' for NLLB, 'de' for M2M100; "
                                      "one-pair models such as opus-mt need no tgt_lang"))
        return code

    # ------------------------------------------------------------------ hooks
    @property
    def max_tokens(self) -> int:
        """Longest source or target in tokens: the model's positions, at most 512."""
        positions = getattr(self.model.config, "max_position_embeddings", None) or _MAX_SOURCE_TOKENS
        return min(_MAX_SOURCE_TOKENS, positions)

    def _preprocess(self, item, *, where: str, **_):
        from ..data import check_text_item

        text = check_text_item(item, where=where)
        n = len(self.processor(text).input_ids)
        if n > self.max_tokens:   # cut silently, its end would be missing from the translation
            raise DataError(_msg(f"{_cap(where)} is {n} tokens long; the model reads at most {self.max_tokens}",
                                 fix="split long documents into sentences or paragraphs (errors='skip' passes over it)"))
        return text

    def _length(self, unit) -> int:
        return len(unit)

    def _collate(self, units):
        return self.processor(units, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")

    def _forward(self, batch, *, num_beams: int | None = None, max_new_tokens: int | None = None, tgt_lang=None, **_):
        from .base import quiet_transformers

        batch = dict(batch)
        limit = self.max_tokens
        # each text's own budget, so a result never depends on the texts batched with it
        budgets = [min(limit, max_new_tokens or int(_GROWTH * n) + 10) for n in batch["attention_mask"].sum(1).tolist()]
        kwargs = {"max_new_tokens": max(budgets), "do_sample": False}
        if num_beams is not None:
            kwargs["num_beams"] = num_beams
        forced = self._set_languages(tgt_lang or self.tgt_lang)
        if forced is not None:
            kwargs["forced_bos_token_id"] = forced
        with quiet_transformers():   # notices about its own generation defaults, nothing a user can act on
            ids = self.model.generate(**batch, **kwargs)
        # the decoder's start token + the budget, less the end token that models such as Marian force in the last slot
        return [seq[:b] for seq, b in zip(ids, budgets)]

    def _postprocess(self, ids, units, **_):
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [{"translation": t.strip()} for t in texts]

    def _frame_keys(self) -> list[str]:
        return ["translation"]

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
        return {"src_lang": self.src_lang, "tgt_lang": self.tgt_lang}

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
            "reference vs translation": [word_diff_html(r, h) for r, h in zip(worst["reference"], worst["prediction"])],
            "chrF": worst["chrf"].values,
        })
        return ("<p><del>struck</del>: words of the reference the model did not write; <ins>green</ins>: what it wrote "
                "instead. A different word can still be a good translation: read them, do not only count them.</p>"
                + table_html(shown, raw_cols=("source", "reference vs translation")))
