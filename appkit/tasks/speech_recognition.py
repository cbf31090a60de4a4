"""Speech recognition: Whisper (packaged tiny.en / base, or any hub/folder Whisper) and CTC models (wav2vec2).

``predict`` takes audio items (see appkit/media.py): a path, bytes, ``(array, rate)`` or a
``{"array", "sampling_rate"}`` dict. Clips up to 30 s are one window; longer recordings
are scanned in blocks with the packaged silero-vad, cut into windows of at most 30 s
in pauses (``chunking="vad"``, the default) or into 30 s windows overlapping by 5 s
(``chunking="fixed"``), transcribed in batches and joined (``Pieces``/``_merge`` in base).

Speed on CPU: greedy decoding, ``torch.inference_mode``, windows batched (sorted by
length), a generation budget that grows with the window's duration, and a bfloat16
*copy* of the model where the CPU computes bf16 natively (autocast breaks Whisper's
feature extractor, and casting the model itself would make fine_tune train bf16
weights). ``precision="float32"`` on load switches the copy off.

Fine-tuning: ``strategy="head"`` (the CPU default) freezes the encoder, caches its
outputs once and trains the decoder; ``"full"`` trains every weight (CTC models only
have "full"). Clips for training must be at most 30 s.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .. import media
from ..errors import DataError, MediaError, ModelError, _cap, _msg, unknown_name
from ..registry import register_task
from .base import Pieces, Task, _bf16_ok, quiet_transformers

_CHUNKING = ("vad", "fixed")
_TASKS = ("transcribe", "translate")
_TOKENS_PER_S = 8      # Whisper writes ~3-5 tokens per second of speech; more means it is looping
_TRANSCRIPT_NAMES = ("text", "transcript", "transcription", "sentence", "normalized_text")
_FILE_NAMES = ("audio", "file_name", "file", "path", "filename")


@dataclass
class _Clip:
    """One model window: samples in memory, or a stretch of a recording read when its batch runs."""
    audio: media.Audio
    start: float
    end: float
    samples: Any = None

    def load(self):
        return self.samples if self.samples is not None else self.audio.read(self.start, self.end)

    def __len__(self) -> int:
        return int((self.end - self.start) * media.SAMPLE_RATE)


@register_task("speech-recognition")
class SpeechRecognition(Task):
    input_column = "audio"
    target_column = "text"
    default_batch_size = 8
    load_options: ClassVar[tuple[str, ...]] = ("language",)
    predict_options: ClassVar[tuple[str, ...]] = ("return_timestamps", "language", "task", "max_new_tokens",
                                                  "num_beams", "chunking")
    best_metric: ClassVar[str] = "eval_loss"
    default_learning_rate: ClassVar[dict] = {"head": 1e-4, "full": 1e-5}
    default_train_batch_size: ClassVar[dict] = {"head": 8, "full": 8}
    default_epochs: ClassVar[dict] = {"head": 5, "full": 3}
    _has_trainer_metrics: ClassVar[bool] = False

    def __init__(self, model, processor, *, kind: str, language: str | None = None, **kw):
        super().__init__(model, processor, **kw)
        self.kind = kind                  # "whisper" | "ctc"
        self.language = language
        self.strategies = ("head", "full") if kind == "whisper" else ("full",)
        self._fast = None                 # (key of the weights it was made from, bf16 copy)

    # ------------------------------------------------------------------ loading
    @classmethod
    def _catalogue_source(cls, entry):
        from ..backbones.whisper_ct2 import packaged_whisper_path

        return str(packaged_whisper_path(entry.name))

    @classmethod
    def _load(cls, source, *, labels, meta, device, language=None):
        import torch
        from transformers import AutoConfig

        if labels is not None:
            raise DataError(_msg("speech-recognition has no labels", fix="drop labels=...; transcripts are the targets"))
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        try:
            if config.model_type == "whisper":
                from transformers import WhisperForConditionalGeneration, WhisperProcessor

                model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32)  # fp32 master weights
                processor = WhisperProcessor.from_pretrained(source)
                kind = "whisper"
                gen = model.generation_config
                gen.pad_token_id = gen.pad_token_id if gen.pad_token_id is not None else config.eos_token_id
                if processor.tokenizer.pad_token is None:   # batching needs it
                    processor.tokenizer.pad_token = processor.tokenizer.eos_token
            elif any(a.endswith("ForCTC") for a in (config.architectures or [])):
                from transformers import AutoModelForCTC, AutoProcessor

                model = AutoModelForCTC.from_pretrained(source, dtype=torch.float32)
                processor = AutoProcessor.from_pretrained(source)
                kind = "ctc"
            else:
                raise ModelError(_msg(f"{source!r} is a {config.model_type} model, not a speech recogniser appkit runs",
                                      expected="a Whisper model or a CTC model such as wav2vec2",
                                      fix="see appkit.list_models('speech-recognition')"))
        except ModelError:
            raise
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        language = language or meta.get("language")
        inst = cls(model, processor, kind=kind, language=language, labels=None,
                   meta={**meta, "source": str(source)}, device=device, precision="auto")
        if language is not None:
            inst._check_language(language, None)
        return inst

    @property
    def window_s(self) -> float:
        """Longest audio the model reads at once (Whisper: its 30 s feature window)."""
        fe = getattr(self.processor, "feature_extractor", None)
        return float(getattr(fe, "chunk_length", 30) or 30) if self.kind == "whisper" else 30.0

    def _multilingual(self) -> bool:
        return bool(getattr(self.model.generation_config, "lang_to_id", None))

    def _check_language(self, language, task) -> None:
        if task is not None and task not in _TASKS:
            raise unknown_name("task", task, _TASKS)
        if self.kind != "whisper":
            if language is not None or task not in (None, "transcribe"):
                raise ModelError(_msg("language= and task= need a Whisper model", fix="load a multilingual Whisper, e.g. 'whisper-base'"))
            return
        english = language is None or str(language).lower() in ("en", "english", "<|en|>")
        if not self._multilingual() and (not english or task == "translate"):
            name = self.meta.get("catalogue") or "This model"
            raise ModelError(_msg(f"{name} is English-only: it cannot take language={language!r}"
                                  + (", task='translate'" if task == "translate" else ""),
                                  fix="load a multilingual Whisper, e.g. appkit.load('speech-recognition', 'whisper-base')"))

    # ------------------------------------------------------------------ input
    def _is_single(self, inputs) -> bool:
        import numpy as np

        if isinstance(inputs, tuple):
            return len(inputs) == 2 and isinstance(inputs[1], (int, float, np.integer)) and not isinstance(inputs[1], bool)
        return isinstance(inputs, (str, bytes, bytearray, os.PathLike, dict, np.ndarray))

    def _preprocess(self, item, *, where: str, chunking: str = "vad", **_):
        if chunking not in _CHUNKING:
            raise unknown_name("chunking", chunking, _CHUNKING)
        audio = media.open_audio(item, where=where)
        if audio.duration <= self.window_s:
            x = audio.read()
            media.check_samples(x, name=audio.name)
            media.check_not_silent(x, name=audio.name)
            return _Clip(audio, 0.0, len(x) / media.SAMPLE_RATE, x)
        if chunking == "fixed":
            _ = media.scan(audio)   # the same checks (finite, not silent), without keeping anything
            windows = media.fixed_windows(audio.duration, max_s=self.window_s)
        else:
            windows = media.speech_windows(media.scan(audio), audio.duration, max_s=self.window_s)
        clips = Pieces(_Clip(audio, s, e) for s, e in windows if e - s > 0.05)
        clips.chunking = chunking
        return clips

    def _length(self, unit) -> int:
        return len(unit)

    def _collate(self, units):
        arrays = [u.load() for u in units]
        if self.kind == "whisper":
            feats = self.processor.feature_extractor(arrays, sampling_rate=media.SAMPLE_RATE, return_tensors="pt")
            return {"input_features": feats.input_features, "seconds": max(len(a) for a in arrays) / media.SAMPLE_RATE}
        batch = self.processor(arrays, sampling_rate=media.SAMPLE_RATE, padding=True, return_tensors="pt",
                               return_attention_mask=True)
        return dict(batch)

    # ------------------------------------------------------------------ model
    def _autocast(self):
        return contextlib.nullcontext()    # the model is cast instead (see _fast_model)

    def _use_bf16(self) -> bool:
        return self.precision == "bfloat16" or (self.precision == "auto" and _bf16_ok(self.device))

    def _fast_model(self):
        """A bfloat16 copy for inference (made once; fine_tune drops it), or the model itself."""
        import torch

        if not self._use_bf16():
            return self.model
        # in-place changes (optimizer steps, load_state_dict) bump a tensor's version: then the copy is stale
        key = (id(self.model), tuple(p._version for p in self.model.parameters()))
        if self._fast is None or self._fast[0] != key:
            self._fast = (key, copy.deepcopy(self.model).to(torch.bfloat16).eval())
        return self._fast[1]

    def _forward(self, batch, *, return_timestamps: bool = False, language=None, task=None, max_new_tokens=None,
                 num_beams: int = 1, **_):
        import torch

        model = self._fast_model()
        if self.kind == "ctc":
            inputs = {k: v for k, v in batch.items() if k in ("input_values", "attention_mask")}
            inputs["input_values"] = inputs["input_values"].to(model.dtype)
            return model(**inputs).logits.float().argmax(-1)
        self._check_language(language, task)
        gen = model.generation_config
        limit = max(1, (gen.max_length or self.model.config.max_target_positions) - 4)
        budget = max_new_tokens or min(limit, int(_TOKENS_PER_S * batch["seconds"]) + 16)
        kwargs: dict = {"max_new_tokens": budget, "num_beams": num_beams, "do_sample": False,
                        "return_timestamps": bool(return_timestamps)}
        if self._multilingual():
            kwargs["language"] = language or self.language
            kwargs["task"] = task or "transcribe"
        feats = batch["input_features"].to(model.dtype)
        mask = torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.long, device=feats.device)
        with quiet_transformers():   # notices about its own generation defaults, nothing a user can act on
            out = model.generate(feats, attention_mask=mask, **kwargs)
        return out.sequences if hasattr(out, "sequences") else out

    def _postprocess(self, ids, units, *, return_timestamps: bool = False, **_):
        tok = self.processor.tokenizer
        out = []
        for seq, clip in zip(ids, units):
            seq = seq.tolist()
            if self.kind == "ctc":
                text = self.processor.decode(seq)
                res = {"text": text.strip()}
                if return_timestamps:
                    res["chunks"] = [{"text": res["text"], "start": clip.start, "end": clip.end}]
                out.append(res)
                continue
            text = tok.decode(seq, skip_special_tokens=True).strip()
            res = {"text": text}
            if return_timestamps:
                chunks = []
                try:
                    offsets = tok.decode(seq, skip_special_tokens=True, output_offsets=True).get("offsets", [])
                except Exception:
                    offsets = []
                for o in offsets:
                    s, e = o["timestamp"]
                    if o["text"].strip():
                        chunks.append({"text": o["text"].strip(), "start": round(clip.start + s, 2),
                                       "end": round(min(clip.end, clip.start + (e if e is not None else clip.end - clip.start)), 2)})
                if not chunks and text:
                    chunks = [{"text": text, "start": round(clip.start, 2), "end": round(clip.end, 2)}]
                res["chunks"] = chunks
            out.append(res)
        return out

    def _merge(self, results: list, pieces: Pieces, *, return_timestamps: bool = False, **_):
        if getattr(pieces, "chunking", "vad") == "fixed":
            words: list[str] = []
            for r in results:
                words = _stitch(words, r["text"].split())
            text = " ".join(words)
        else:
            text = " ".join(r["text"] for r in results if r["text"])
        merged = {"text": text}
        if return_timestamps:
            merged["chunks"] = [c for r in results for c in r.get("chunks", [])]
        return merged

    def _frame_keys(self) -> list[str]:
        return ["text"]

    # ------------------------------------------------------------------ data
    def _read_folder(self, path: Path, *, where: str) -> pd.DataFrame:
        """A folder of audio files with a transcripts table (CSV/TSV/JSONL naming each file) or .txt files beside them."""
        from ..data import read_table

        tables = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"))
        if tables:
            df = read_table(tables[0], where=where)
            fcol = next((c for c in _FILE_NAMES if c in df.columns), None)
            tcol = next((c for c in _TRANSCRIPT_NAMES if c in df.columns), None)
            if fcol is None or tcol is None:
                raise DataError(_msg(f"The transcripts file {tables[0].name!r} in the {where} folder needs a file column and a transcript column",
                                     where=f"its columns are {list(df.columns)}",
                                     expected=f"one of {list(_FILE_NAMES)} and one of {list(_TRANSCRIPT_NAMES)}"))
            df = df.rename(columns={fcol: "audio", tcol: "text"})
            df["audio"] = [str(v) if Path(str(v)).is_absolute() else str(path / str(v)) for v in df["audio"]]
            return df
        rows = []
        for f in sorted(path.rglob("*")):
            if f.suffix.lower() in media.AUDIO_SUFFIXES and f.with_suffix(".txt").exists():
                rows.append({"audio": str(f), "text": f.with_suffix(".txt").read_text(encoding="utf-8").strip()})
        if not rows:
            raise DataError(_msg(f"The {where} folder {str(path)!r} has no transcripts",
                                 expected="a metadata.csv/transcripts.jsonl naming each file with its text, or a .txt beside each audio file"))
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ training
    def _prepare_targets(self, train_df: pd.DataFrame, eval_df: pd.DataFrame | None):
        from ..data import check_text, warn_shared_duplicates

        out = []
        for df, where in ((train_df, "training data"), (eval_df, "evaluation data")):
            if df is None:
                out.append(None)
                continue
            check_text(list(df[self.target_column]), where=where, column=self.target_column)
            for i, item in enumerate(df[self.input_column]):
                audio = media.open_audio(item, where=f"row {i} of the {where}")
                if audio.duration > self.window_s:
                    raise MediaError(_msg(f"{_cap(audio.name)} is {audio.duration:.0f} s long; training clips must be at most "
                                          f"{self.window_s:.0f} s", fix="cut long recordings into sentences with their own transcripts"))
            out.append([self._label_ids(t, where=f"row {i} of the {where}") for i, t in enumerate(df[self.target_column])])
        if eval_df is not None:
            warn_shared_duplicates([str(x) for x in train_df[self.input_column]],
                                   [str(x) for x in eval_df[self.input_column]], what="recordings")
        return out[0], out[1]

    def _label_ids(self, text: str, *, where: str) -> list[int]:
        tok = self.processor.tokenizer
        if self.kind == "ctc":
            return tok(text.upper() if _upper_vocab(tok) else text).input_ids
        if self._multilingual():
            tok.set_prefix_tokens(language=self.language or "en", task="transcribe", predict_timestamps=False)
        ids = tok(" " + text.strip()).input_ids   # Whisper writes a space before the first word
        if ids and ids[0] == self.model.config.decoder_start_token_id:
            ids = ids[1:]                         # the model puts it back when it shifts the labels
        limit = self.model.config.max_target_positions
        if len(ids) > limit:
            raise DataError(_msg(f"{_cap(where)} has a transcript of {len(ids)} tokens; the model reads at most {limit}",
                                 fix="split the recording and its transcript into shorter pieces"))
        return ids

    def _class_weights(self, targets):
        return None

    def _train_collate(self, units, targets, train: bool):
        batch = self._collate(units)
        batch.pop("seconds", None)
        batch["labels"] = _pad_labels(targets)
        return batch

    def _features(self, batch):
        model = self._fast_model()
        return model.model.encoder(batch["input_features"].to(model.dtype)).last_hidden_state

    def _feature_state(self) -> dict:
        return self.model.model.encoder.state_dict()

    def _head(self):
        if self.kind != "whisper":
            raise ModelError(_msg("strategy='head' trains a Whisper decoder", fix="use strategy='full' for CTC models"))
        return _DecoderHead(self.model)

    def _head_collate(self, pairs):
        import torch

        feats, ys = zip(*pairs)
        return {"features": torch.stack(list(feats)), "labels": _pad_labels(list(ys))}

    def _step_loss(self, model, inputs: dict, weights):
        if "features" in inputs:        # strategy "head": the frozen encoder's outputs were cached
            loss = model.head(inputs["features"], inputs["labels"])
        else:
            loss = model(**inputs).loss
        return loss, {"loss": loss}

    def _after_fit(self, run) -> None:
        self._fast = None                # the bf16 copy holds the old weights

    def _save_meta(self) -> dict:
        return {"language": self.language, "kind": self.kind}

    # ------------------------------------------------------------------ evaluation
    def _check_eval_targets(self, df: pd.DataFrame) -> None:
        from ..data import check_text

        check_text(list(df[self.target_column]), where="evaluation data", column=self.target_column)

    def _eval_table(self, df: pd.DataFrame, results: list) -> pd.DataFrame:
        from ..metrics import wer_cer

        refs, hyps = [str(t) for t in df[self.target_column]], [r["text"] for r in results]
        table = pd.DataFrame({"input": [_audio_name(a) for a in df[self.input_column]], "reference": refs,
                              "prediction": hyps, "wer": [wer_cer([r], [h])["wer"] for r, h in zip(refs, hyps)]})
        if "synthetic" in df.columns:
            table["synthetic"] = df["synthetic"].fillna(False).astype(bool).values
        return table

    def _metrics(self, table: pd.DataFrame, summary: bool = False) -> dict:
        from ..metrics import wer_cer

        m = wer_cer(list(table["reference"]), list(table["prediction"]))
        if not summary:
            m["sentence_error_rate"] = float((table["wer"] > 0).mean()) if len(table) else float("nan")
        return m

    def _report_extras(self, report) -> None:
        t = report.table
        if "synthetic" in t and t["synthetic"].any():
            report.baseline = {"share of synthetic (TTS) recordings in this evaluation": float(t["synthetic"].mean())}

    def _worst(self, table: pd.DataFrame, n: int) -> pd.DataFrame:
        cols = ["input", "reference", "prediction", "wer"] + (["synthetic"] if "synthetic" in table else [])
        return table[table["wer"] > 0].sort_values("wer", ascending=False, kind="stable").head(n)[cols]

    def _worst_html(self, worst: pd.DataFrame) -> str:
        from ..report import table_html

        shown = pd.DataFrame({
            "audio": [html.escape(str(a)) + (" <b>[synthetic]</b>" if worst.get("synthetic", pd.Series(False, index=worst.index))[i] else "")
                      for i, a in zip(worst.index, worst["input"])],
            "reference vs hypothesis": [word_diff_html(r, h) for r, h in zip(worst["reference"], worst["prediction"])],
            "wer": worst["wer"].values,
        })
        return ("<p><del>struck</del>: words the model missed or got wrong; <ins>green</ins>: what it wrote instead.</p>"
                + table_html(shown, raw_cols=("audio", "reference vs hypothesis")))


# ---------------------------------------------------------------------- helpers
def word_diff_html(reference: str, hypothesis: str) -> str:
    """Reference vs hypothesis on normalised words: <del> for missed/wrong words, <ins> for what came instead."""
    from ..metrics import _normalise_text

    ref, hyp = _normalise_text(reference).split(), _normalise_text(hypothesis).split()
    out = []
    for op, a, b, c, d in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(ref[a:b])))
            continue
        if b > a:
            out.append(f"<del>{html.escape(' '.join(ref[a:b]))}</del>")
        if d > c:
            out.append(f"<ins>{html.escape(' '.join(hyp[c:d]))}</ins>")
    return " ".join(out)


def _stitch(left: list[str], right: list[str], look: int = 24) -> list[str]:
    """Join two overlapping windows' words at their longest common run (>= 2 words) near the seam."""
    if not left:
        return list(right)
    key = lambda w: re.sub(r"[^\w']", "", w.lower())  # noqa: E731
    tail, head = [key(w) for w in left[-look:]], [key(w) for w in right[:look]]
    m = difflib.SequenceMatcher(a=tail, b=head, autojunk=False).find_longest_match(0, len(tail), 0, len(head))
    if m.size >= 2:
        cut = len(left) - len(tail) + m.a
        return left[:cut] + right[m.b:]
    return left + right


def _pad_labels(seqs: list[list[int]]):
    import torch

    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _upper_vocab(tok) -> bool:
    vocab = tok.get_vocab()
    return "E" in vocab and "e" not in vocab


def _audio_name(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict) and item.get("path"):
        return str(item["path"])
    return f"<{type(item).__name__} audio>"


class _DecoderHead:
    """Whisper's decoder (and its tied output layer) on cached encoder outputs: training it trains the model."""

    def __new__(cls, model):
        import torch
        import torch.nn.functional as F

        class DecoderHead(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.decoder = model.model.decoder
                tied = model.proj_out.weight is model.model.decoder.embed_tokens.weight
                # a tied output layer is read from the embeddings: a second name for the same tensor breaks safetensors
                self.proj_out = None if tied else model.proj_out
                self.pad, self.start = model.config.pad_token_id, model.config.decoder_start_token_id

            def forward(self, features, labels):
                from transformers.models.whisper.modeling_whisper import shift_tokens_right

                dec_in = shift_tokens_right(labels, self.pad, self.start)
                h = self.decoder(input_ids=dec_in, encoder_hidden_states=features).last_hidden_state
                w = self.decoder.embed_tokens.weight if self.proj_out is None else self.proj_out.weight
                logits = F.linear(h, w)
                return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

        return DecoderHead(model)
