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
Many-language models (NLLB, M2M100, mBART-50: their tokenizer has ``src_lang``) need ``source_lang=`` and
``target_lang=`` at load (their own codes: ``eng_Latn`` / ``en`` / ``en_XX``; ``.languages`` lists them); a
multi-target Marian (``>>deu<<`` tokens) needs ``target_lang=``. The codes reach the tokenizer (source and,
for fine_tune, target language tokens) and generate's forced first token, are saved in appkit.json, and
``predict(..., target_lang=...)`` translates one call into another language. A one-pair model takes no codes
(its own pair's are accepted).

``predict(..., glossary={"invoice": "Rechnung"})`` fixes terms: each source term (whole word, any case) becomes a
stand-in the model copies (``%1``, ``%2``: 58 of 60 held-out strings, scripts/mt_placeholders.py) and the target
term replaces it; each result gets ``glossary`` ({target term: kept?}) and a lost one is warned about once.
Placeholders and markup come through as the model writes them; an ``&`` accelerator is taken out and put
back (``protect=False``: left to the model). ``evaluate`` reports ``glossary_adherence`` with a glossary, and
BLEU is tokenized for the target language (metrics.bleu_tokenizer).

Fine-tuning trains every weight (``strategy="full"``) on ``source`` / ``target`` pairs; the
saved folder is a plain transformers folder (``AutoModelForSeq2SeqLM`` + ``AutoTokenizer`` load it;
transformers 5 removed its translation pipeline).
Evaluation: BLEU and chrF (sacrebleu) overall and per slice, against the baseline of copying the
source unchanged, with the worst sentences' differences highlighted.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import ClassVar

import pandas as pd

from ..errors import DataError, ModelError, UnknownNameError, _cap, _msg, warn
from ..registry import ModelEntry, register_task
from .base import Metric, Pieces, TextTargetTask, TrainingDefaults, pad_labels

_MAX_SOURCE_TOKENS = 512
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+")
_GROWTH = 2.0         # a translation is rarely more than twice its source's length in tokens
_MANY_CODE = re.compile(r"^[a-z]{2,3}_[A-Za-z]{2,4}$")     # NLLB eng_Latn, mBART-50 en_XX
_MARIAN_CODE = re.compile(r"^>>(\w+)<<$")                   # opus-mt-en-mul: >>deu<< first in the source
# ISO 639-1 -> 639-3 for the suggestions of an unknown code ("de" on an NLLB model: did you mean 'deu_Latn'?)
_ISO3 = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "pt": "por", "nl": "nld", "ru": "rus",
         "zh": "zho", "ja": "jpn", "ko": "kor", "ar": "arb", "pl": "pol", "tr": "tur", "uk": "ukr", "sv": "swe",
         "cs": "ces", "hi": "hin", "da": "dan", "fi": "fin", "el": "ell", "he": "heb", "hu": "hun", "ro": "ron"}

# a cheap check that inputs are in the source language: its script, and for English its commonest words
_NON_LATIN = re.compile(r"[^\W\d_a-zA-Z\u00c0-\u024f]")
_LATIN = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sv", "da", "fi", "ro", "hu", "tr")
_EN_WORDS = frozenset("the a an of to and is in it for on with this that you are be not or".split())
_OTHER_WORDS = frozenset("der die das und ist nicht ein eine le la les est et des une el los las es y una il che "
                         "di het een niet".split())


def _not_in(text: str, iso: str) -> bool:
    """Whether a text plainly is not in the language ``iso`` (False when unsure: short texts, other languages)."""
    letters = [c for c in text if c.isalpha()]
    if iso in _LATIN and len(letters) >= 4 and sum(bool(_NON_LATIN.match(c)) for c in letters) > len(letters) / 2:
        return True
    words = re.findall(r"[a-zA-Z\u00c0-\u024f]+", text.lower())
    return (iso == "en" and len(words) >= 5 and not _EN_WORDS.intersection(words)
            and len(_OTHER_WORDS.intersection(words)) >= 2)


def _language_codes(tokenizer) -> tuple[str, list[str]]:
    """("many", codes) for tokenizers that take src_lang/tgt_lang (M2M100, NLLB, mBART-50), ("marian", codes) for
    a multi-target Marian whose vocabulary holds >>xx<< tokens, ("", []) for a model of one language pair."""
    if hasattr(tokenizer, "src_lang"):
        codes = list(getattr(tokenizer, "lang_code_to_id", None) or {})
        if not codes:   # NLLB keeps its codes as special tokens only
            codes = [t for t in tokenizer.all_special_tokens if _MANY_CODE.match(t)]
        if codes:
            return "many", codes
    codes = [m.group(1) for t in tokenizer.get_vocab() if (m := _MARIAN_CODE.match(t))]
    return ("marian", sorted(codes)) if codes else ("", [])


def _lang_token_id(tokenizer, code: str) -> int:
    """The token that starts a translation into ``code`` (generate's forced_bos_token_id)."""
    if hasattr(tokenizer, "get_lang_id"):          # M2M100: __de__
        return tokenizer.get_lang_id(code)
    ids = getattr(tokenizer, "lang_code_to_id", None) or {}
    return ids[code] if code in ids else tokenizer.convert_tokens_to_ids(code)


def _suggest_code(code: str, codes: list[str]) -> str | None:
    low = str(code).lower().replace("-", "_")
    stems = {low, _ISO3.get(low, low), _ISO3.get(low.split("_")[0], low)}
    for c in codes:                   # "de" -> "de_DE" (mBART-50), "deu_Latn" (NLLB), "deu" (Marian)
        if c.lower() in stems or c.lower().split("_")[0] in stems:
            return c
    close = difflib.get_close_matches(str(code), codes, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_code(arg: str, code, codes: list[str], model: str) -> UnknownNameError:
    shown = codes if len(codes) <= 12 else codes[:12] + [f"... {len(codes)} in all: see .languages"]
    text = f"Unknown language code {arg}={code!r} for {model}. Available: {shown}."
    close = _suggest_code(code, codes)
    return UnknownNameError(text + (f" Did you mean {close!r}?" if close else ""))


def _example_codes(codes: list[str]) -> tuple[str, str]:
    """Two codes of this model's scheme for a message: English and German where it has them."""
    en, de = _suggest_code("en", codes), _suggest_code("de", codes)
    return en or codes[0], de or codes[min(1, len(codes) - 1)]


def _set_languages(model, tokenizer, name: str, source_lang, target_lang) -> dict:
    """Check the codes against the model and set them where transformers reads them: the tokenizer (the language
    tokens of sources and, for fine_tune, targets) and generate's forced first token, so a saved folder translates
    the same way in plain transformers. -> the task's source_lang / target_lang."""
    kind, codes = _language_codes(tokenizer)
    if not kind:
        _check_one_pair(tokenizer, name, source_lang, target_lang)
        return {"source_lang": source_lang, "target_lang": target_lang}
    needed = ("source_lang", "target_lang") if kind == "many" else ("target_lang",)   # Marian reads any source
    given = {"source_lang": source_lang, "target_lang": target_lang}
    missing = [a for a in needed if given[a] is None]
    if missing:
        en, de = _example_codes(codes)
        what = "between many languages" if kind == "many" else "into several languages"
        raise ModelError(_msg(f"{name!r} translates {what} ({type(tokenizer).__name__}): it needs "
                              + " and ".join(f"{a}=" for a in missing),
                              fix=f"e.g. appkit.load('translation', {name!r}, "
                                  + ", ".join(f"{a}={(en if a == 'source_lang' else de)!r}" for a in missing)
                                  + f"); its codes include {list(dict.fromkeys([en, de, *codes[:6]]))} "
                                    f"({len(codes)} in all: .languages lists them)"))
    for arg in needed:
        if given[arg] not in codes:
            raise _unknown_code(arg, given[arg], codes, repr(name))
    if kind == "many":
        tokenizer.src_lang, tokenizer.tgt_lang = source_lang, target_lang
        model.generation_config.forced_bos_token_id = _lang_token_id(tokenizer, target_lang)
    return given


def _check_one_pair(tokenizer, name: str, source_lang, target_lang) -> None:
    """A model of one language pair takes no codes; its own pair's (Marian's source_lang/target_lang) are accepted,
    so code written for several models runs on it."""
    own = {a: getattr(tokenizer, a, None) for a in ("source_lang", "target_lang")}
    for arg, code in (("source_lang", source_lang), ("target_lang", target_lang)):
        if code is not None and str(code).lower().split("_")[0] != str(own[arg]).lower():
            pair = f" ({own['source_lang']} -> {own['target_lang']})" if own["target_lang"] else ""
            raise ModelError(_msg(f"{name!r} translates one language pair{pair}; it takes no {arg}={code!r}",
                                  fix=f"drop {arg}=..., or load a model for that language (e.g. "
                                      "'Helsinki-NLP/opus-mt-<src>-<tgt>' or an NLLB / M2M100 model)"))


# An accelerator: '&File' (the letter after & is underlined in a menu); not '&&', '&amp;' or 'A & B'
_ACCEL = re.compile(r"(?<![&\w])&(?=(\w))(?!\w+;)")


class _Source(str):
    """A source as the model reads it, with what _postprocess puts back: ``restore`` (stand-in, glossary target
    term) and the accelerator letter (``accel``) that was taken out."""
    restore: tuple[tuple[str, str], ...] = ()
    accel: str | None = None


def _source(text: str, restore=(), accel=None) -> str:
    if not restore and not accel:
        return str(text)
    out = _Source(text)
    out.restore, out.accel = tuple(restore), accel
    return out


def _stand_in(k: int) -> str:
    """Glossary terms become %1, %2, ...: Qt's numbered placeholders, one token each in appkit-mt-en-de's vocabulary,
    which it copies (58 of 60 held-out strings, scripts/mt_placeholders.py; a made-up word 'ZX1' 49, the term
    itself 4)."""
    return f"%{k}"


def _glossary_pattern(glossary: Mapping[str, str]) -> re.Pattern:
    terms = sorted(glossary, key=len, reverse=True)          # "invoice number" before "invoice"
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)


def _protect(text: str, glossary: Mapping[str, str] | None, protect: bool) -> _Source:
    """Glossary terms -> numbered stand-ins the model copies; an accelerator's & taken out (put back by _restore)."""
    accel = None
    if protect and len(_ACCEL.findall(text)) == 1:
        accel = _ACCEL.search(text).group(1)
        text = _ACCEL.sub("", text)
    restore = []
    if glossary:
        lower = {k.lower(): v for k, v in glossary.items()}
        taken = {int(n) for n in re.findall(r"%(\d+)", text)}       # the source's own %1 stays itself
        free = (k for k in range(1, 1000) if k not in taken)

        def swap(m: re.Match) -> str:
            restore.append((_stand_in(next(free)), lower[m.group(0).lower()]))
            return restore[-1][0]

        text = _glossary_pattern(glossary).sub(swap, text)
    return _source(text, restore, accel)


def _restore(text: str, unit) -> tuple[str, dict[str, bool]]:
    """The translation with the glossary terms and the accelerator put back -> (text, {target term: kept?})."""
    kept: dict[str, bool] = {}
    for stand_in, term in getattr(unit, "restore", ()):
        text, n = re.subn(re.escape(stand_in) + r"(?!\d)", lambda m: term, text)
        kept[term] = kept.get(term, True) and n > 0
    accel = getattr(unit, "accel", None)
    if accel and "&" not in text:
        # before the same letter where the translation has one (a word start first), else before its first letter
        m = (re.search(rf"(?<!\w){re.escape(accel)}", text, re.IGNORECASE)
             or re.search(re.escape(accel), text, re.IGNORECASE) or re.search(r"\w", text))
        if m:
            text = text[:m.start()] + "&" + text[m.start():]
    return text, kept


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
    load_options: ClassVar[tuple[str, ...]] = ("prefix", "source_lang", "target_lang")
    predict_options: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "num_beams": ("forward",), "max_new_tokens": ("batches", "forward"), "target_lang": ("preprocess", "forward"),
        "glossary": ("preprocess", "postprocess"), "protect": ("preprocess",)}
    training: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs={"full": 3}, learning_rate={"full": 5e-5}, batch_size={"full": 16}, best_metric="eval_loss")
    result_keys: ClassVar[tuple[str, ...]] = ("translation",)
    frame_keys: ClassVar[tuple[str, ...]] = ("translation",)
    metric_info: ClassVar[Mapping[str, Metric]] = {
        "bleu": Metric("how many of the reference translation's word sequences the model wrote (0-100; above ~30 "
                       "is usually understandable)"),
        "chrf": Metric("the same on characters, fairer to word endings and compound words (0-100)"),
        "glossary_adherence": Metric("share of the sentences holding a glossary term whose translation has every "
                                     "required target term", percent=True),
    }

    def __init__(self, model, tokenizer, *, prefix: str = "", source_lang: str | None = None,
                 target_lang: str | None = None, **kw):
        super().__init__(model, tokenizer, **kw)
        self.prefix = prefix              # T5's task prefix, e.g. "translate English to German: "
        self.source_lang, self.target_lang = source_lang, target_lang   # codes of a many-language model
        self._lang_kind, self.languages = _language_codes(tokenizer)   # languages: the codes this model takes
        self._bleu_lang = None           # the target language of the predict call running (evaluate's BLEU)

    # ------------------------------------------------------------------ loading
    @classmethod
    def _load(cls, source, *, labels, meta, device, prefix=None, source_lang=None, target_lang=None):
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
        langs = _set_languages(model, tokenizer, str(source), source_lang or meta.get("source_lang"),
                               target_lang or meta.get("target_lang"))
        _freeze_fixed_positions(model)
        prefix = prefix if prefix is not None else meta.get("prefix", "")
        if config.model_type in ("t5", "mt5", "umt5", "longt5") and not prefix:
            known = [p.get("prefix") for k, p in (getattr(config, "task_specific_params", None) or {}).items()
                     if k.startswith("translation") and p.get("prefix")]
            raise ModelError(_msg(f"{str(source)!r} is a T5 model: it translates only when each text starts with its task",
                                  fix="pass prefix=..., e.g. " + (" or ".join(repr(p) for p in known) if known
                                                                  else "'translate English to German: '")))
        return cls(model, tokenizer, prefix=prefix, **langs, labels=None, meta={**meta, "source": str(source)},
                   device=device, precision="auto")

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

    def _text_prefix(self, target_lang: str | None = None) -> str:
        """What precedes every source: T5's task prefix, a multi-target Marian's >>xx<< target token."""
        if self._lang_kind == "marian":
            return f"{self.prefix}>>{target_lang or self.target_lang}<< "
        return self.prefix

    def _preprocess(self, item, *, where: str, target_lang: str | None = None, glossary: Mapping | None = None,
                    protect: bool = False):
        """protect (predict and evaluate; fine_tune's inputs stay as written): an accelerator's & is taken out and
        put back after translation; glossary terms become stand-ins the model copies (_protect)."""
        from ..data import check_text_item

        unit = _protect(check_text_item(item, where=where), glossary, protect)
        prefix = self._text_prefix(target_lang)
        restore, accel = getattr(unit, "restore", ()), getattr(unit, "accel", None)
        if len(self.processor(prefix + unit).input_ids) <= self.max_tokens:
            return _source(prefix + unit, restore, accel)
        # longer than the model reads: translated sentence by sentence and rejoined (_merge), never cut
        pieces = self._split(str(unit), where=where, prefix=prefix)
        return Pieces(_source(prefix + p, [r for r in restore if re.search(re.escape(r[0]) + r"(?!\d)", p)],
                              accel if k == 0 else None) for k, p in enumerate(pieces))

    def _split(self, text: str, *, where: str, prefix: str | None = None) -> list[str]:
        """Sentences packed into pieces that fit the model; a sentence too long on its own is split between words."""
        prefix = self.prefix if prefix is None else prefix
        room = self.max_tokens - len(self.processor(prefix).input_ids)     # the prefix and the end token

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
        out = {"translation": " ".join(r["translation"] for r in results if r["translation"])}
        if "glossary" in results[0]:
            kept: dict[str, bool] = {}
            for r in results:
                for term, ok in r["glossary"].items():
                    kept[term] = kept.get(term, True) and ok
            out["glossary"] = kept
        return out

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
        if options.get("target_lang") is not None:
            self._check_target_lang(options["target_lang"])
        glossary = options.get("glossary")
        if glossary is not None and (not isinstance(glossary, Mapping) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip() for k, v in glossary.items())):
            raise DataError(_msg(f"glossary={glossary!r:.80} is not a dict of source term -> target term",
                                 fix="e.g. glossary={'invoice': 'Rechnung', 'appkit': 'appkit'} (non-empty texts)"))
        if not isinstance(options.get("protect", True), bool):
            raise DataError(_msg(f"protect={options['protect']!r} must be True or False", fix="e.g. protect=False"))

    def _check_target_lang(self, code) -> None:
        name = repr(self.meta.get("catalogue") or self.meta.get("source"))
        if not self._lang_kind:
            raise ModelError(_msg(f"{name} translates one language pair; it takes no target_lang={code!r}",
                                  fix="drop target_lang=..., or load a model for that language"))
        if code not in self.languages:
            raise _unknown_code("target_lang", code, self.languages, name)

    def _route_options(self, options: dict) -> dict[str, dict]:
        steps = super()._route_options(options)
        steps["preprocess"].setdefault("protect", True)    # predict and evaluate protect; fine_tune's inputs do not
        return steps

    def _run(self, items: list, *, batch_size, errors, where: str, progress: bool | None = None, **options) -> list:
        """The one predict path, plus what a translation call reports once: glossary terms the model lost."""
        self._bleu_lang = options.get("target_lang") or self._target_code()
        self._warn_wrong_language(items, where)
        results = super()._run(items, batch_size=batch_size, errors=errors, where=where, progress=progress,
                               **options)
        lost = [(i, term) for i, r in enumerate(results) if r for term, ok in r.get("glossary", {}).items() if not ok]
        if lost:
            shown = "; ".join(f"{where} {i}: {term!r}" for i, term in lost[:5]) + (" ..." if len(lost) > 5 else "")
            warn(f"{len(lost)} glossary term(s) did not come out in the translation (the model dropped their "
                 f"stand-in; result['glossary'] marks them False): {shown}")
        return results

    def _warn_wrong_language(self, items: list, where: str) -> None:
        code = self.source_lang or getattr(self.processor, "source_lang", None)
        if not code:
            return
        iso = {v: k for k, v in _ISO3.items()}.get(code.split("_")[0].lower(), code.split("_")[0].lower())
        odd = [i for i, x in enumerate(items) if isinstance(x, str) and _not_in(x, iso)]
        if odd:
            warn(f"{len(odd)} of {len(items)} inputs do not look like {code!r}, the language this model translates "
                 f"from ({where} {odd[0]}: {str(items[odd[0]])[:40]!r}); it translates from that language only")

    def _target_code(self) -> str | None:
        return self.target_lang or getattr(self.processor, "target_lang", None)

    def _forward(self, batch, *, num_beams: int | None = None, max_new_tokens: int | None = None,
                 target_lang: str | None = None):
        from ..runtime import quiet_transformers

        batch = dict(batch)
        budgets = [self._budget(n, max_new_tokens) for n in batch["attention_mask"].sum(1).tolist()]
        kwargs = {"max_new_tokens": max(budgets), "do_sample": False}   # one budget per batch (_batches)
        if num_beams is not None:
            kwargs["num_beams"] = num_beams
        if self._lang_kind == "many":    # the target language's token starts every translation
            kwargs["forced_bos_token_id"] = _lang_token_id(self.processor, target_lang or self.target_lang)
        with quiet_transformers():   # notices about its own generation defaults, nothing a user can act on
            ids = self.model.generate(**batch, **kwargs)
        beams = num_beams or getattr(self.model.generation_config, "num_beams", 1) or 1
        if beams > 1:
            return ids      # beams of a longer budget are not cut: a cut mid-sentence is worse than a longer one
        # greedy: each text's own budget (the decoder's start token + b new tokens; models such as Marian force
        # their end token into the last slot, so a cut there keeps b - 1 words, as a run on its own would)
        forced = getattr(self.model.generation_config, "forced_eos_token_id", None) is not None
        return [seq[:b if forced else b + 1] for seq, b in zip(ids, budgets)]

    def _postprocess(self, ids, units, *, glossary: Mapping | None = None):
        out = []
        for text, unit in zip(self._decode(ids), units):
            text, kept = _restore(text.strip(), unit)
            out.append({"translation": text, **({"glossary": kept} if glossary is not None else {})})
        return out

    def _decode(self, ids) -> list[str]:
        if self._lang_kind != "many":
            return self.processor.batch_decode(ids, skip_special_tokens=True)
        # the forced language token is not special to every tokenizer (M2M100's '__de__' would be written out)
        lang_ids = {_lang_token_id(self.processor, c) for c in self.languages}
        return self.processor.batch_decode([[i for i in seq.tolist() if i not in lang_ids] for seq in ids],
                                           skip_special_tokens=True)

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
        return {"prefix": self.prefix, "source_lang": self.source_lang, "target_lang": self.target_lang}

    # ------------------------------------------------------------------ evaluation
    def _eval_table(self, df: pd.DataFrame, results: list) -> pd.DataFrame:
        import sacrebleu

        refs, hyps = [str(t) for t in df[self.target_column]], [r["translation"] for r in results]
        table = pd.DataFrame({"input": [str(x) for x in df[self.input_column]], "reference": refs, "prediction": hyps,
                              "chrf": [sacrebleu.sentence_chrf(h, [r]).score for r, h in zip(refs, hyps)]})
        if results and "glossary" in results[0]:    # evaluate(..., glossary=...): None where no term occurs
            table["glossary_kept"] = [all(r["glossary"].values()) if r["glossary"] else None for r in results]
        return table

    def _metrics(self, table: pd.DataFrame, summary: bool = False) -> dict:
        from ..metrics import bleu_chrf

        m = bleu_chrf(list(table["reference"]), list(table["prediction"]), target_lang=self._bleu_lang)
        if "glossary_kept" in table:
            kept = table["glossary_kept"].dropna()
            m["glossary_adherence"] = float(kept.astype(bool).mean()) if len(kept) else float("nan")
        return m

    def _report_extras(self, report) -> None:
        from ..metrics import bleu_chrf

        t = report.table
        copied = bleu_chrf(list(t["reference"]), list(t["input"]), target_lang=self._bleu_lang)
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
