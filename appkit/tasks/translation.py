"""Translation: a transformers text-to-text model for one language pair (Marian
``Helsinki-NLP/opus-mt-<src>-<tgt>``, or T5 with its task ``prefix=``) by hub id or folder.

No neural text-to-text translation model is packaged offline (shared/MODELS.md), so the task has
no default model: name one (it downloads once), or a folder such as one saved by ``.save()``.
``predict`` takes texts; each result is ``{"translation": str}``. Texts are batched by length,
decoded with the model's own generation settings (``num_beams=`` overrides them) and a budget of
new tokens that grows with the source's length; on CPUs with native bfloat16 under autocast.
With greedy decoding a text's budget is its own, so its result does not depend on its batch;
beam search and bf16 padding can change a result slightly with its batch-mates.
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
    load_options: ClassVar[tuple[str, ...]] = ("prefix",)
    predict_options: ClassVar[tuple[str, ...]] = ("num_beams", "max_new_tokens")
    default_learning_rate: ClassVar[dict] = {"full": 5e-5}
    default_train_batch_size: ClassVar[dict] = {"full": 16}
    default_epochs: ClassVar[dict] = {"full": 3}

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
        prefix = prefix if prefix is not None else meta.get("prefix", "")
        if config.model_type in ("t5", "mt5", "umt5", "longt5") and not prefix:
            known = [p.get("prefix") for k, p in (getattr(config, "task_specific_params", None) or {}).items()
                     if k.startswith("translation") and p.get("prefix")]
            raise ModelError(_msg(f"{str(source)!r} is a T5 model: it translates only when each text starts with its task",
                                  fix="pass prefix=..., e.g. " + (" or ".join(repr(p) for p in known) if known
                                                                  else "'translate English to German: '")))
        return cls(model, tokenizer, prefix=prefix, labels=None, meta={**meta, "source": str(source)}, device=device,
                   precision="auto")

    # ------------------------------------------------------------------ hooks
    @property
    def max_tokens(self) -> int:
        """Longest source or target in tokens: the model's positions, at most 512."""
        positions = getattr(self.model.config, "max_position_embeddings", None) or _MAX_SOURCE_TOKENS
        return min(_MAX_SOURCE_TOKENS, positions)

    def _preprocess(self, item, *, where: str, **_):
        from ..data import check_text_item

        text = self.prefix + check_text_item(item, where=where)
        n = len(self.processor(text).input_ids)
        if n > self.max_tokens:   # cut silently, its end would be missing from the translation
            raise DataError(_msg(f"{_cap(where)} is {n} tokens long; the model reads at most {self.max_tokens}",
                                 fix="split long documents into sentences or paragraphs (errors='skip' passes over it)"))
        return text

    def _length(self, unit) -> int:
        return len(unit)

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

    def _forward(self, batch, *, num_beams: int | None = None, max_new_tokens: int | None = None, **_):
        from .base import quiet_transformers

        batch = dict(batch)
        budgets = [min(self.max_tokens, max_new_tokens or int(_GROWTH * n) + 10)
                   for n in batch["attention_mask"].sum(1).tolist()]
        kwargs = {"max_new_tokens": max(budgets), "do_sample": False}
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
