"""Speech recognition on a tiny random Whisper built in the test (2 s windows, d_model 32): seconds, no outside files."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import appkit
from appkit import media
from appkit.errors import AppkitError, MediaError, ModelError
from appkit.metrics import wer_cer
from appkit.tasks.base import Pieces
from appkit.tasks.speech_recognition import (_decode_attention, _reorder_self_attention_only, _split_segments, _stitch,
                                             word_diff_html)

from ..conftest import make_tiny_ctc_folder, make_tiny_whisper_folder, make_tones


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_whisper_folder(tmp_path_factory.mktemp("tiny") / "whisper")


@pytest.fixture
def asr(tiny_folder):
    return appkit.load("speech-recognition", tiny_folder)


@pytest.fixture(scope="module")
def listening_folder(tmp_path_factory):
    """A tiny Whisper whose (letter) transcript depends on the audio: the plain one writes '' for everything."""
    return make_tiny_whisper_folder(tmp_path_factory.mktemp("tiny") / "listening", listening=True)


@pytest.fixture
def listening(listening_folder):
    return appkit.load("speech-recognition", listening_folder)


def test_the_listening_model_hears_a_difference(listening):
    tone = listening.predict((_tone(1.0), 16000))["text"]
    noise = listening.predict((0.3 * np.random.default_rng(0).standard_normal(16000).astype("float32"), 16000))["text"]
    assert tone and noise and tone != noise        # so an equal transcript below means the same audio was heard


@pytest.fixture
def clips(tmp_path):
    return make_tones(tmp_path / "clips")


def _tone(seconds=1.0, sr=16000, f=300.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t)).astype("float32")


# ------------------------------------------------------------------ audio in
def test_past_the_held_budget_clips_are_read_from_their_files_again(listening, clips, monkeypatch):
    paths = list(clips.audio)
    ref = listening.predict(paths)
    one = int(1.2 * 16000) * 4                                  # a 1.2 s clip's float32 samples
    listening.held_inputs_mb = 2.5 * one / 2**20                # room for two
    units, _, _ = listening._preprocess_items(paths, errors="raise", where="input")
    assert [u.samples is not None for _, u in units] == [True] * 2 + [False] * (len(paths) - 2)
    assert sum(listening._held_bytes(u) for _, u in units) == 2 * one
    reads = []
    real = media.Audio.read
    monkeypatch.setattr(media.Audio, "read", lambda self, *a: reads.append(self.path) or real(self, *a))
    out = listening.predict(paths)
    assert sorted(reads) == sorted(paths + paths[2:])           # checked once each; six read again in a batch
    assert [r["text"] for r in out] == [r["text"] for r in ref]
    # an in-memory clip is a view of the caller's array: it counts nothing against the budget
    mem = listening._preprocess_items([(_tone(), 16000)], errors="raise", where="input")[0]
    assert listening._held_bytes(mem[0][1]) == 0


def test_every_audio_form_gives_the_same_transcript(asr, clips):
    path = clips.audio[0]
    x, sr = sf.read(path, dtype="float32")
    raw = open(path, "rb").read()
    want = asr.predict(path)["text"]
    got = asr.predict([raw, (x, sr), {"array": x, "sampling_rate": sr}, {"path": path, "bytes": None}])
    assert [g["text"] for g in got] == [want] * 4


def test_stereo_int16_44k_becomes_mono_float_16k():
    x = _tone(1.0, 44100)
    stereo = (np.stack([x, x], axis=1) * 32767).astype(np.int16)
    audio = media.open_audio((stereo, 44100), where="input 0")
    y = audio.read()
    assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - 16000) <= 1
    ref = media.resample(x, 44100)
    assert np.abs(y - ref).max() < 1e-3
    chans_first = media.open_audio((stereo.T.copy(), 44100), where="input 0").read()
    assert np.allclose(chans_first, y)


def test_8bit_and_8khz_files_are_read(tmp_path, listening):
    low = tmp_path / "phone.wav"
    sf.write(low, _tone(1.0, 8000), 8000, subtype="PCM_U8")
    x = media.load_audio(str(low), where="input 0")
    assert abs(len(x) - 16000) <= 1 and np.abs(x).max() > 0.2
    assert listening.predict(str(low))["text"] == listening.predict((_tone(1.0), 16000))["text"]


@pytest.mark.parametrize("fmt,subtype,lossless", [("FLAC", "PCM_16", True), ("OGG", "VORBIS", False),
                                                   ("MP3", "MPEG_LAYER_III", False)])
def test_flac_ogg_and_mp3_files_are_read(tmp_path, listening, fmt, subtype, lossless):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    x = _tone(1.0, 22050)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, x, 22050, format=fmt, subtype=subtype)
    y = media.load_audio(str(path), where="input 0")
    ref = media.resample(x, 22050)
    assert abs(len(y) - len(ref)) <= 0.06 * 16000                   # mp3 pads a frame or two
    n = min(len(y), len(ref))
    if lossless:
        assert np.abs(y[:n] - ref[:n]).max() < 1e-3
    else:
        assert np.abs(y).max() > 0.2                                  # the tone came through
    assert listening.predict(str(path))["text"] == listening.predict((_tone(1.0), 16000))["text"]


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b""), re.escape("empty file (0 bytes)")),
    (lambda p: p.write_text("not audio at all"), "not an audio file"),
    (lambda p: sf.write(p, np.zeros(16000, "float32"), 16000), "is silent"),
    (lambda p: sf.write(p, np.full(16000, np.nan, "float32"), 16000, subtype="FLOAT"), "NaN"),
])
def test_bad_files_raise_media_error_naming_the_file(tmp_path, asr, make, match):
    path = tmp_path / "broken.wav"
    make(path)
    with pytest.raises(MediaError, match=match) as err:
        asr.predict(str(path))
    assert "broken.wav" in str(err.value) and "input 0" in str(err.value).lower()


def test_a_bare_array_asks_for_its_rate(asr):
    with pytest.raises(MediaError, match=re.escape("(array, sampling_rate)")):
        asr.predict(_tone())
    with pytest.raises(MediaError, match="NaN"):
        asr.predict((np.array([0.1, np.nan] * 8000, dtype="float32"), 16000))
    with pytest.raises(MediaError, match="does not exist"):
        asr.predict("no/such/file.wav")


def test_english_only_model_refuses_language_and_translate(asr, clips):
    with pytest.raises(ModelError, match="English-only.*whisper-base"):
        asr.predict(clips.audio[0], language="de")
    with pytest.raises(ModelError, match="translate"):
        asr.predict(clips.audio[0], task="translate")
    with pytest.raises(AppkitError, match="Available"):
        asr.predict(clips.audio[0], chunking="smart")


# ------------------------------------------------------------------ long recordings
def _long_recording(path, seconds=9.0, sr=22050):
    """Tone bursts of 1.2 s with 0.6 s of near-silence between them, at 22.05 kHz stereo."""
    rng = np.random.default_rng(1)
    x = 0.001 * rng.standard_normal(int(seconds * sr)).astype("float32")
    t = 0.3
    while t + 1.2 < seconds:
        a = int(t * sr)
        x[a:a + int(1.2 * sr)] += _tone(1.2, sr, 250 + 100 * (t % 3))
        t += 1.8
    sf.write(path, np.stack([x, x], 1), sr)
    return x


def test_long_recording_is_split_batched_and_stitched(tmp_path, asr, listening, monkeypatch):
    monkeypatch.setattr(media, "_silero", lambda: None)   # silero rightly hears no speech in tones: use the energy detector
    path = tmp_path / "meeting.wav"
    _long_recording(path)
    unit = asr._preprocess(str(path), where="input 0")
    assert isinstance(unit, Pieces) and len(unit) >= 3
    assert all(c.end - c.start <= asr.window_s + 1e-6 for c in unit)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(unit, unit[1:]))   # windows never overlap (vad)
    out = asr.predict(str(path), return_timestamps=True)
    assert set(out) == {"text", "chunks"} and isinstance(out["text"], str)
    starts = [c["start"] for c in out["chunks"]]
    assert starts == sorted(starts) and all(0 <= c["start"] <= c["end"] <= 9.0 for c in out["chunks"])
    both = asr.predict([str(path), str(path)], batch_size=3)
    assert both[0]["text"] == both[1]["text"] == asr.predict(str(path))["text"]
    fixed = asr._preprocess(str(path), where="input 0", chunking="fixed")
    assert len(fixed) >= 5 and fixed[0].end > fixed[1].start          # fixed windows overlap
    # every word of the stitched transcript was heard in one of the fixed windows
    words = listening.predict(str(path), chunking="fixed")["text"].split()
    x = media.load_audio(str(path), where="input 0")
    heard = {w for c in fixed for w in
             listening.predict((x[int(c.start * 16000):int(c.end * 16000)], 16000))["text"].split()}
    assert words and set(words) <= heard


def test_long_file_is_read_in_blocks_not_whole(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(_tone(1.0, 16000), 150), 16000)       # 150 s
    audio = media.open_audio(str(path), where="input 0")
    assert audio.data is None and audio.duration == pytest.approx(150)
    sizes = [len(x) for _, x in audio.blocks()]
    assert max(sizes) <= 60 * 16000 and sum(sizes) == 150 * 16000
    assert len(audio.read(10, 12)) == 32000


def test_speech_windows_cut_in_pauses_and_respect_the_limit():
    fs = 512 / 16000
    probs = np.zeros(int(100 / fs), "float32")
    for s, e in [(1, 5), (6, 12), (20, 70), (80, 82)]:            # 50 s of talk without a pause at 20-70 s
        probs[int(s / fs):int(e / fs)] = 0.9
    probs[int(45 / fs):int(45.3 / fs)] = 0.4                       # a breath: quieter, not silence
    windows = media.speech_windows(probs, 100.0, max_s=30)
    assert all(e - s <= 30 + 1e-6 for s, e in windows)
    assert windows[0][0] < 1 and windows[0][1] > 12                # short utterances are packed together
    covered = lambda t: any(s <= t <= e for s, e in windows)  # noqa: E731
    assert all(covered(t) for t in (1.5, 11, 21, 45, 69, 81))
    assert not covered(16) and not covered(90)


def test_stitch_joins_overlapping_windows_once():
    a = "the quick brown fox jumps over the lazy".split()
    b = "over the lazy dog and runs".split()
    assert _stitch(a, b) == "the quick brown fox jumps over the lazy dog and runs".split()
    assert _stitch(["hello"], ["world"]) == ["hello", "world"]


# ------------------------------------------------------------------ packing short clips, decoding speed
def test_short_clips_are_packed_into_windows_that_fit(asr):
    lengths = [1.5, 0.9, 0.6, 0.5, 0.4, 0.3, 0.3]      # the tiny model reads 2 s windows; clips <= 1 s are packed
    units = [asr._preprocess((_tone(d, f=200 + 40 * k), 16000), where=f"input {k}") for k, d in enumerate(lengths)]
    keyed = sorted(enumerate(units), key=lambda u: -len(u[1]))
    batches = asr._batches(keyed, batch_size=2)
    assert [k for k, _ in batches[0]] == [0] and units[0].window is None          # 1.5 s: alone
    # [0.9, 0.6] and [0.5, 0.4, 0.3, 0.3], 1/6 s apart; the plan travels with the call's clips, not on the task
    assert asr._call_facts(keyed) == {"packing": {"clips": 6, "windows": 2, "retried": 0}}
    assert sorted(k for b in batches for k, _ in b) == list(range(7))
    gap = asr.window_s / 12
    for b in batches[1:]:
        batch = asr._collate([u for _, u in b])
        for spans in batch.get("plan", []):
            assert spans[-1][1] + spans[-1][2] <= asr.window_s + 1e-3               # the window holds its clips
            for (_, a, d), (_, b2, _) in zip(spans, spans[1:]):
                assert b2 - (a + d) == pytest.approx(gap, abs=1e-3)               # silence between clips
    assert asr._batches(keyed, batch_size=2, pack=False) == [keyed[k:k + 2] for k in range(0, 7, 2)]


def test_head_training_packs_short_clips_into_windows_with_timestamped_targets(asr, tmp_path):
    """Strategy "head" caches one encoder pass per packed window (as predict packs), its target each clip's words
    between the timestamps of where the clip sits in the window."""
    lengths = [1.5, 0.9, 0.6, 0.5, 0.4, 0.3, 0.3]
    units = [asr._preprocess((_tone(d), 16000), where=f"input {k}") for k, d in enumerate(lengths)]
    targets = [asr._label_ids(f"word {k}", where=f"row {k}") for k in range(len(units))]
    # the tiny model has 4 timestamp tokens, too few to say where a clip sits in its 2 s window: nothing is packed
    assert asr._cached_examples(units, targets) == (units, targets)
    asr = appkit.load("speech-recognition", make_tiny_whisper_folder(tmp_path / "stamps", timestamps=101,
                                                                     max_target_positions=64))
    lengths = [1.5, 0.9, 0.6, 0.5, 0.4, 0.3, 0.3]
    units = [asr._preprocess((_tone(d, f=200 + 40 * k), 16000), where=f"input {k}") for k, d in enumerate(lengths)]
    targets = [asr._label_ids(f"word {k}", where=f"row {k}") for k in range(len(units))]
    examples, ys = asr._cached_examples(units, targets)
    assert len(examples) == 3 and examples[0] is units[0] and ys[0] == targets[0]     # 1.5 s: alone, as it was
    tok = asr.processor.tokenizer
    seen = []
    for window, y in zip(examples[1:], ys[1:]):
        text = tok.decode(y, decode_with_timestamps=True)
        stamps = [float(t) for t in re.findall(r"<\|(\d+\.\d+)\|>", text)]
        spans = window.spans()
        assert len(stamps) == 2 * len(spans) and "notimestamps" not in text, text
        for (at, d), (a, b) in zip(spans, zip(stamps[::2], stamps[1::2])):
            assert a == pytest.approx(at, abs=0.011) and b == pytest.approx(at + d, abs=0.011), text
        assert len(window.load()) == len(window) and len(window) <= asr.window_s * 16000
        seen += re.findall(r"word (\d)", text)
        assert y[-1] == targets[0][-1]                                                 # end of text
    assert sorted(seen) == [str(k) for k in range(1, 7)]                              # every row, once
    # and training on them: the batch size counts rows, so 7 rows at batch size 4 are 2 steps an epoch
    df = pd.DataFrame({"audio": [(_tone(d, f=200 + 40 * k), 16000) for k, d in enumerate(lengths)],
                       "text": [f"word {k}" for k in range(7)]})
    run = asr.fine_tune(df, epochs=2, batch_size=4, output_dir=tmp_path / "run", progress=False, checkpoints=False)
    assert run.strategy == "head" and run.history["step"].max() == 4
    assert any("packed the 7 training rows into 3 examples" in n for n in run.notes), run.notes


def test_predict_encodes_one_window_at_a_time_with_the_batch_s_outputs(listening_folder, monkeypatch):
    """The encoder runs window by window where no gradient is kept (a fraction of the memory, no slower): the
    transcripts are those of the batched encoder, a forward with gradients stays batched, and a copy of the model
    encodes with its own weights."""
    import copy

    import torch

    from appkit.tasks import speech_recognition as sr

    listening = appkit.load("speech-recognition", listening_folder, precision="float32")   # the model predicts
    noise = (0.3 * np.random.default_rng(0).standard_normal(16000)).astype("float32")
    clips = [(_tone(1.0), 16000), (noise, 16000), (_tone(0.6, f=300), 16000)]
    encoder = listening.model.get_encoder()
    with monkeypatch.context() as m:
        m.setattr(sr, "_for_decoding", lambda model: None)
        batched = listening.predict(clips, pack=False)
    assert batched[0]["text"] != batched[1]["text"]                               # each window heard apart
    assert "forward" not in encoder.__dict__
    assert listening.predict(clips, pack=False) == batched
    assert isinstance(encoder.__dict__.get("forward"), sr._OneWindowAtATime)       # set by predict, on the instance
    feats = listening._collate([listening._preprocess(c, where="input") for c in clips], pack=False)["input_features"]
    calls: list = []
    hook = encoder.conv1.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
    with torch.no_grad():
        chunked = encoder(feats).last_hidden_state
    assert calls == [1, 1, 1]
    calls.clear()
    plain = encoder(feats).last_hidden_state                                      # gradients kept: one batched pass
    assert calls == [3] and plain.requires_grad and torch.allclose(chunked, plain, atol=1e-5)
    hook.remove()
    twin = copy.deepcopy(listening.model).get_encoder()
    with torch.no_grad():
        assert twin.forward.encoder is twin
        twin.conv1.weight.mul_(0)                                                  # the copy reads its own weights
        assert not torch.allclose(twin(feats).last_hidden_state, chunked)
        assert torch.allclose(encoder(feats).last_hidden_state, chunked)


def test_packed_predict_keeps_one_result_per_clip_in_order(asr):
    clips = [(_tone(0.3 + 0.1 * k, f=200 + 40 * k), 16000) for k in range(6)]
    alone = asr.predict(clips, pack=False)
    packed = asr.predict(clips)
    assert packed.packing["clips"] == 6 and packed.packing["windows"] < 6
    assert asr.packing == packed.packing                  # also set once on the task, at the end of the call
    assert len(packed) == 6 and all(isinstance(r["text"], str) for r in packed)
    # windows [clip 5, 4], [3, 2, 1], [0]. The tiny model's timestamps stop at 0.06 s, so whatever it
    # writes lies in the first clip of a window: clips 4, 2 and 1 get nothing, are in doubt, and are
    # transcribed again alone, exactly as without packing
    assert packed.packing["retried"] >= 3
    assert [packed[k] for k in (1, 2, 4)] == [alone[k] for k in (1, 2, 4)]
    assert alone.packing == {"clips": 0, "windows": 0, "retried": 0}    # each call reports its own packing
    with_times = asr.predict(clips, return_timestamps=True)
    assert all(0 <= c["start"] <= c["end"] <= 0.3 + 0.1 * k + 1e-6 for k, r in enumerate(with_times) for c in r["chunks"])


def test_split_segments_gives_each_clip_its_text_and_doubts_the_rest():
    spans = [(0, 0.0, 2.0), (1, 4.5, 1.5), (2, 8.5, 3.0)]         # (clip, start s, duration s) in the window
    seg = lambda text, s, e: {"text": " " + text, "timestamp": (s, e)}  # noqa: E731
    got, doubt = _split_segments([seg("Please hold.", 0.0, 2.4), seg("Goodbye.", 4.3, 6.2),   # ends run into the gap
                                  seg("Thank", 8.6, 10.0), seg("you.", 10.0, 11.3), seg("Yes.", 11.2, 11.4)], spans)
    assert doubt == set()
    assert {i: [t for t, _, _ in v] for i, v in got.items()} == {0: ["Please hold."], 1: ["Goodbye."],
                                                                 2: ["Thank", "you.", "Yes."]}
    got, doubt = _split_segments([seg("Please hold. Goodbye.", 0.0, 6.0), seg("Thank you.", 8.5, 11.5)], spans)
    assert doubt == {0, 1}                                          # one segment ran well into two clips
    got, doubt = _split_segments([seg("Please hold.", 0.0, 2.0), seg("Goodbye.", 4.5, 6.0), seg("uh", 6.5, 8.0),
                                  seg("Thank you.", 8.5, 11.5)], spans)
    assert doubt == {1, 2} and got[0]                               # words in a gap: both neighbours again alone
    got, doubt = _split_segments([seg("Please hold.", 0.0, 2.0)], spans)
    assert doubt == {1, 2}                                          # clips left without text
    repeated = [seg("Please hold.", 0.0, 2.0), seg("Where is the station?", 4.5, 6.0),
                seg("where is the station", 8.5, 11.5)]
    got, doubt = _split_segments(repeated, spans)
    assert doubt == {1, 2}                                          # the same words in two clips: Whisper looping
    got, doubt = _split_segments(repeated, spans, same=lambda a, b: {a, b} == {1, 2})
    assert doubt == set() and got[2]                                # ... unless clips 1 and 2 are one recording twice


def _fake_window(asr, monkeypatch, ids, offsets):
    """Make the tokenizer read ``ids`` as a packed window with these timestamped segments."""
    tok = asr.processor.tokenizer
    real = tok.decode

    def decode(seq, skip_special_tokens=False, output_offsets=False, **kw):
        if list(seq) == ids:
            text = "".join(o["text"] for o in offsets)
            return {"text": text, "offsets": offsets} if output_offsets else text
        return real(seq, skip_special_tokens=skip_special_tokens, output_offsets=output_offsets, **kw)

    monkeypatch.setattr(tok, "decode", decode)


def test_unpack_gives_each_clip_its_segments_and_retries_the_doubtful(asr, monkeypatch):
    import torch

    from appkit.tasks.speech_recognition import _Clip, _Packed, _Packing

    audio = media.open_audio((_tone(3.0), 16000), where="input 0")
    # three pieces of one recording, at 0, 1.0 and 2.0 s in it, packed at 0, 0.7 and 1.3 s in the window
    plan = _Packing(batch_size=8, clips=3, windows=1)
    units = [_Clip(audio, 0.0, 0.5, _tone(0.5), packing=plan), _Clip(audio, 1.0, 1.4, _tone(0.4, f=400), packing=plan),
             _Clip(audio, 2.0, 2.3, _tone(0.3, f=500), packing=plan)]
    spans = [(0, 0.0, 0.5), (1, 0.7, 0.4), (2, 1.3, 0.3)]
    eos = asr.model.generation_config.eos_token_id
    alone = asr._postprocess(asr._forward(asr._collate(units, pack=False), return_timestamps=True), units,
                             return_timestamps=True)
    offsets = [{"text": " one", "timestamp": (0.0, 0.45)}, {"text": " two", "timestamp": (0.72, 1.2)}]
    _fake_window(asr, monkeypatch, [7, eos], offsets)              # clip 2 heard nothing
    out = asr._unpack(_Packed(torch.tensor([[7, eos]]), [spans]), units, return_timestamps=True)
    assert [r["text"] for r in out[:2]] == ["one", "two"]
    assert out[1]["chunks"] == [{"text": "two", "start": 1.02, "end": 1.4}]   # times in the recording, within the clip
    assert out[2] == alone[2] and plan.retried == 1
    _fake_window(asr, monkeypatch, [7, 8], offsets)                # no end of text: cut off by the token budget
    out = asr._unpack(_Packed(torch.tensor([[7, 8]]), [spans]), units, return_timestamps=False)
    plain = asr._postprocess(asr._forward(asr._collate(units, pack=False)), units)
    assert out[0]["text"] == "one" and out[1:] == plain[1:]


def test_multilingual_whisper_without_a_language_is_not_packed(asr, monkeypatch):
    units = [asr._preprocess((_tone(0.3 + 0.1 * k), 16000), where=f"input {k}") for k in range(4)]
    keyed = list(enumerate(units))
    monkeypatch.setattr(type(asr), "_multilingual", lambda self: True)
    asr._batches(keyed, batch_size=8)
    assert all(u.window is None for u in units) and asr._call_facts(keyed)["packing"]["windows"] == 0
    asr._batches(keyed, batch_size=8, language="de")
    assert any(u.window is not None for u in units)
    asr._batches(keyed, batch_size=8, language="de", task="translate")     # translations are never packed
    assert all(u.window is None for u in units)


def test_ctc_decoding_keeps_double_letters_and_drops_special_tokens(tmp_path):
    asr = appkit.load("speech-recognition", make_tiny_ctc_folder(tmp_path / "tiny-ctc"))
    tok = asr.processor.tokenizer
    ids = tok.convert_tokens_to_ids(list("HHELL") + ["<pad>", "L", "O", "|", "N", "</s>", "O"])
    import torch

    audio = media.open_audio((_tone(1.0), 16000), where="input 0")
    from appkit.tasks.speech_recognition import _Clip

    out = asr._postprocess(torch.tensor([ids]), [_Clip(audio, 0.0, 1.0, _tone(1.0))])
    assert out == [{"text": "HELLO NO"}]            # </s> printed nowhere, and it kept N and O apart as a blank would


def test_beam_search_without_cross_attention_copies_gives_the_same_ids(tiny_folder, clips):
    import torch

    asr = appkit.load("speech-recognition", tiny_folder, precision="float32")
    feats = asr._collate([asr._preprocess(p, where="x") for p in clips.audio[:3]])["input_features"]
    calls = []

    def counted(cache, idx):
        calls.append(1)
        return _reorder_self_attention_only(cache, idx)

    kw = dict(num_beams=3, max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        plain = asr.model.generate(feats, **kw)
        asr.model._reorder_cache = counted
        ours = asr.model.generate(feats, **kw)
    assert calls and torch.equal(plain.sequences, ours.sequences)
    assert torch.allclose(plain.sequences_scores, ours.sequences_scores)


def test_one_token_decode_attention_matches_sdpa(tiny_folder, clips):
    import copy

    import torch

    asr = appkit.load("speech-recognition", tiny_folder, precision="float32")
    ours = copy.deepcopy(asr.model)
    ours.set_attn_implementation(_decode_attention())
    feats = asr._collate([asr._preprocess(p, where="x") for p in clips.audio[:2]])["input_features"]
    kw = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        want, got = asr.model.generate(feats, **kw), ours.generate(feats, **kw)
    assert torch.equal(want.sequences, got.sequences)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(want.scores, got.scores))


def test_missing_silero_is_said_once_not_hidden(monkeypatch):
    monkeypatch.setattr(media, "_vad_weights_path", lambda: None)
    monkeypatch.setattr(media, "_VAD", None)
    monkeypatch.setattr(media, "_VAD_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            p = media.speech_probabilities([_tone(1.0)])
    said = [w for w in caught if issubclass(w.category, media.VadFallbackWarning)]
    assert len(said) == 1 and "pip install --no-deps silero-vad" in str(said[0].message)
    assert p.max() == 1.0                                             # the energy detector still answers


def test_vad_port_finds_speech_in_tones_not_in_noise():
    if media._vad_weights_path() is None:
        pytest.skip("silero-vad is not installed")
    rng = np.random.default_rng(0)
    noise = 0.001 * rng.standard_normal(16000 * 4).astype("float32")
    p = media.speech_probabilities([noise])
    assert len(p) == 16000 * 4 // 512 and p.max() < 0.5
    assert media.speech_windows(p, 4.0) == []        # no speech: nothing to transcribe, and no hallucination


# ------------------------------------------------------------------ fine-tune, save, resume
def test_head_fine_tune_trains_only_the_decoder_and_lowers_loss(asr, clips, tmp_path):
    import torch

    from appkit.tasks.speech_recognition import _kept_in_head

    enc = {k: v.clone() for k, v in asr.model.model.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in asr.model.model.decoder.state_dict().items()}
    run = asr.fine_tune(clips, epochs=4, learning_rate=3e-3, batch_size=4, output_dir=tmp_path / "run", progress=False)
    assert run.strategy == "head"
    assert all(np.allclose(v, asr.model.model.encoder.state_dict()[k]) for k, v in enc.items())
    after = asr.model.model.decoder.state_dict()
    kept = {k for k in dec if _kept_in_head(k)}
    assert "embed_tokens.weight" in kept and "layers.0.encoder_attn.k_proj.weight" in kept
    # the token embeddings (the tied output layer) and the cross-attention's keys and values stay as they were
    assert all(torch.equal(dec[k], after[k]) for k in kept)
    for k in ("layers.0.fc1.weight", "layers.0.self_attn.q_proj.weight", "layers.0.encoder_attn.q_proj.weight"):
        assert not torch.allclose(dec[k], after[k]), k     # the rest of the decoder trains
    losses = run.history["train_loss"].dropna()
    assert losses.iloc[-1] < losses.iloc[0]
    assert list((tmp_path / "run").glob("checkpoint-*"))
    # the encoder ran as the bf16 copy where the CPU has bf16: its outputs are cached as they came, at half the size
    from appkit.training import feature_cache

    cached = next(iter(feature_cache(asr).values()))
    assert cached.dtype == (torch.bfloat16 if asr._use_bf16() else torch.float32)


def test_head_loss_is_whisper_s_own_loss_on_the_same_encoder_outputs(asr):
    """The head scores only the positions a label is on (no vocabulary projection over padding): the same loss
    as the model's own forward, whose cross-entropy skips the -100 padding."""
    import torch

    from appkit.tasks.speech_recognition import _DecoderHead

    torch.manual_seed(0)
    features = torch.randn(2, asr.model.config.max_source_positions, asr.model.config.d_model)
    labels = torch.tensor([[5, 6, 7, 8, 2], [9, 10, -100, -100, -100]])
    head = _DecoderHead(asr.model).eval()
    with torch.no_grad():
        ours = head(features, labels)
        theirs = asr.model.eval()(encoder_outputs=(features,), labels=labels).loss
    assert torch.isfinite(ours) and torch.allclose(ours, theirs, atol=1e-5)


def test_head_reads_each_window_s_cross_attention_keys_and_values_once_within_a_budget(asr):
    """The head keeps the cross-attention's key and value projections as they are, so a window's keys and
    values are computed the first time it is read: the same loss and gradients as projecting them in the step."""
    import torch

    from appkit.tasks.speech_recognition import _DecoderHead, _Room, _WithCrossKV

    torch.manual_seed(0)
    feats = torch.randn(3, asr.model.config.max_source_positions, asr.model.config.d_model)
    calls = []
    examples = _WithCrossKV(feats, lambda f: calls.append(1) or asr._cross_kv(f), _Room(2**30))
    labels = [torch.tensor([5, 6, 7, 2]), torch.tensor([9, 10, 2])]
    batch = asr._head_collate([(examples[i], labels[i]) for i in (0, 1)])
    assert len(batch["cross_kv"]) == asr.model.config.decoder_layers
    assert batch["cross_kv"][0][0].shape[:2] == (2, asr.model.config.decoder_attention_heads)
    head = _DecoderHead(asr.model)
    losses, grads = [], []
    for cross in (None, batch["cross_kv"]):
        loss = head(batch["features"], batch["labels"], cross)
        loss.backward()
        losses.append(loss.detach())
        grads.append(head.decoder.layers[0].encoder_attn.q_proj.weight.grad.clone())
        head.decoder.zero_grad()
    assert torch.allclose(*losses, atol=1e-6) and torch.allclose(*grads, atol=1e-6)
    louder = [(k, v * 100) for k, v in batch["cross_kv"]]          # the layers do read them
    assert not torch.allclose(head(batch["features"], batch["labels"], louder).detach(), losses[0], atol=0.1)
    asr._head_collate([(examples[i], labels[i % 2]) for i in (0, 1, 2)])         # the next epoch
    assert len(calls) == 3 and len(examples.kept) == 3     # each window once
    one = examples.used // 3
    room = _Room(one * 1.5)                      # one window's, shared by two splits
    small, other = _WithCrossKV(feats, asr._cross_kv, room), _WithCrossKV(feats[1:], asr._cross_kv, room)
    for _ in range(2):
        assert all(torch.equal(small[i][1][0][0], examples[i][1][0][0]) for i in range(3))
        assert torch.equal(other[0][1][0][0], examples[1][1][0][0])
    assert list(small.kept) == [0] and small.used == one and not other.kept and room.left == one * 0.5


@pytest.mark.parametrize("precision, dtype", [("bfloat16", "bfloat16"), ("float32", "float32")])
def test_head_trains_the_decoder_under_bf16_autocast_where_bf16_is_on(tiny_folder, clips, tmp_path, precision, dtype):
    """Trainer's bf16 flag wraps only model.forward, which the head's step does not call: the step casts itself."""
    import torch

    asr = appkit.load("speech-recognition", tiny_folder, precision=precision)
    seen = []
    hook = asr.model.model.decoder.layers[0].fc1.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype) if torch.is_grad_enabled() else None)
    try:
        run = asr.fine_tune(clips, epochs=1, batch_size=4, output_dir=tmp_path / "run", progress=False)
    finally:
        hook.remove()
    assert run.strategy == "head" and seen and set(seen) == {getattr(torch, dtype)}
    assert asr.model.model.decoder.layers[0].fc1.weight.dtype == torch.float32     # float32 master weights


def test_full_fine_tune_resumes_from_its_checkpoint(asr, clips, tmp_path):
    out = tmp_path / "run"
    asr.fine_tune(clips, epochs=1, strategy="full", batch_size=4, output_dir=out, progress=False)
    run = asr.fine_tune(clips, epochs=2, strategy="full", batch_size=4, output_dir=out, resume=True, progress=False)
    assert run.resumed_from_step == 2


def test_training_clip_longer_than_the_window_is_refused(asr, clips, tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, _tone(3.0), 16000)
    bad = pd.concat([clips, pd.DataFrame([{"audio": str(long), "text": "yes"}])], ignore_index=True)
    with pytest.raises(MediaError, match=r"(?i)row 8 of the training data.*at most 2 s"):
        asr.fine_tune(bad, epochs=1, progress=False)
    with pytest.raises(AppkitError, match="empty text"):
        asr.fine_tune(clips.assign(text=[""] + list(clips.text[1:])), epochs=1, progress=False)


def test_folder_with_transcripts_table_or_txt_files(asr, clips, tmp_path):
    folder = tmp_path / "clips"                      # make_tones wrote the wavs here
    pd.DataFrame({"file_name": [p.split("/")[-1] for p in clips.audio], "transcript": clips.text}).to_csv(
        folder / "metadata.csv", index=False)
    df = asr._read(folder, columns=None, where="training data")
    assert list(df.text) == list(clips.text) and all(p.startswith(str(folder)) for p in df.audio)
    side = tmp_path / "side"
    side.mkdir()
    for p, t in zip(clips.audio[:2], clips.text[:2]):
        target = side / p.split("/")[-1]
        target.write_bytes(open(p, "rb").read())
        target.with_suffix(".txt").write_text(t)
    assert len(asr._read(side, columns=None, where="training data")) == 2


def test_datasets_audio_column_trains_and_evaluates(asr, clips, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"audio": list(clips.audio), "text": list(clips.text)}).cast_column(
        "audio", datasets.Audio(sampling_rate=16000))                  # rows hold {"bytes", "path"}: no decoder needed
    run = asr.fine_tune(ds, epochs=1, output_dir=tmp_path / "run", progress=False)
    assert run.strategy == "head" and len(run.history)
    report = asr.evaluate(ds)
    assert len(report.table) == len(clips)
    preds = [r["text"] for r in asr.predict(list(clips.audio), pack=False)]
    assert report.metrics["wer"] == pytest.approx(wer_cer(list(clips.text), preds)["wer"])
    assert report.table.prediction.tolist() == [r["text"] for r in asr.predict(list(clips.audio), pack=False)]


def test_save_and_load_keep_the_transcripts(asr, clips, tmp_path):
    before = asr.predict(list(clips.audio[:3]))
    folder = asr.save(tmp_path / "saved")
    meta = json.loads((folder / "appkit.json").read_text())
    assert meta["task"] == "speech-recognition" and meta["kind"] == "whisper"
    names = {p.name for p in folder.iterdir()}
    assert {"generation_config.json", "tokenizer.json"} <= names and names & {"processor_config.json", "preprocessor_config.json"}
    again = appkit.load("speech-recognition", folder).predict(list(clips.audio[:3]))
    assert [a["text"] for a in again] == [b["text"] for b in before]


def test_float32_and_bfloat16_paths_both_run(listening_folder, clips):
    a = appkit.load("speech-recognition", listening_folder, precision="float32")
    assert a._fast_model() is a.model
    b = appkit.load("speech-recognition", listening_folder, precision="bfloat16")
    import torch

    fast = b._fast_model()
    assert fast.dtype == torch.bfloat16 and b.model.dtype == torch.float32 and b._fast_model() is fast
    with torch.no_grad():                     # the user changes the weights in place: the copy is remade
        b.model.proj_out.weight.mul_(1.0)
    assert b._fast_model() is not fast
    ours = [r["text"] for r in b.predict(list(clips.audio))]
    assert ours == [r["text"] for r in a.predict(list(clips.audio))]


# ------------------------------------------------------------------ evaluation and report
def test_report_has_wer_per_slice_and_highlighted_differences(asr, clips, tmp_path):
    report = asr.evaluate(clips, slice_by="speaker")
    assert {"wer", "cer", "sentence_error_rate"} <= set(report.metrics)
    assert set(report.slices["value"]) == {"s0", "s1"} and "wer" in report.slices
    html = report._repr_html_()
    assert "<del>" in html or "<ins>" in html
    assert "[synthetic]" in html and "synthetic (TTS)" in html
    assert report.to_html(tmp_path / "r.html", examples=False).read_text().count("<del>") == 0


def test_word_diff_and_number_normalisation():
    assert word_diff_html("take the omeprazole daily", "take the o maze all daily") == \
        "take the <del>omeprazole</del> <ins>o maze all</ins> daily"
    assert wer_cer(["I have twelve cats"], ["I have 12 cats."])["wer"] == 0.0
    assert wer_cer(["the fifteenth, twenty first and second floor"], ["The 15th, 21st and 2nd floor."])["wer"] == 0.0
    assert wer_cer(["the twelfth and fortieth"], ["the 12th and 40th"])["wer"] == 0.0


# ------------------------------------------------------------------ CTC models (wav2vec2)
def test_ctc_model_from_a_folder_predicts_fine_tunes_and_saves(tmp_path, clips):
    asr = appkit.load("speech-recognition", make_tiny_ctc_folder(tmp_path / "tiny-ctc"))
    assert asr.kind == "ctc" and asr.strategies == ("full",)
    one = asr.predict(clips.audio[0], return_timestamps=True)
    assert isinstance(one["text"], str) and one["text"] == one["text"].upper()      # letters of its vocabulary
    assert one["chunks"][0]["start"] == 0.0 and one["chunks"][0]["end"] == pytest.approx(1.2)
    batch = asr.predict(list(clips.audio[:3]) + [clips.audio[0]], batch_size=2)     # padded batches, any length
    assert batch[0]["text"] == batch[3]["text"] == one["text"]
    with pytest.raises(ModelError, match="Whisper"):
        asr.predict(clips.audio[0], language="de")
    with pytest.raises(AppkitError, match=r"strategy 'head'.*\['auto', 'full'\]"):
        asr.fine_tune(clips, epochs=1, strategy="head", progress=False)
    run = asr.fine_tune(clips, epochs=3, strategy="full", learning_rate=1e-3, batch_size=4,
                        output_dir=tmp_path / "run", progress=False)
    losses = run.history["train_loss"].dropna().to_numpy()
    assert len(losses) >= 2 and np.isfinite(losses).all() and losses[-1] < losses[0]          # lowercase targets were upper-cased
    report = asr.evaluate(clips)
    preds = [r["text"] for r in asr.predict(list(clips.audio))]
    want = wer_cer(list(clips.text), preds)
    assert report.metrics["wer"] == pytest.approx(want["wer"]) and report.metrics["cer"] == pytest.approx(want["cer"])
    asr.save(tmp_path / "saved")
    back = appkit.load("speech-recognition", tmp_path / "saved")
    assert back.kind == "ctc" and back.predict(clips.audio[1])["text"] == asr.predict(clips.audio[1])["text"]


def test_shared_recordings_are_found_by_content_not_by_how_they_print(asr, tmp_path):
    a, b = _tone(1.0, f=300), _tone(1.0, f=300)
    b[8000:8010] += 0.01                                              # prints like a, sounds different
    train = pd.DataFrame({"audio": [(a, 16000), (_tone(1.0, f=500), 16000)], "text": ["yes", "no"]})
    other = pd.DataFrame({"audio": [(b, 16000)], "text": ["yes"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asr.fine_tune(train, eval_data=other, epochs=1, output_dir=tmp_path / "r1", progress=False)
    assert not [w for w in caught if "in both the training and the evaluation" in str(w.message)]
    with pytest.warns(UserWarning, match=r"1 example appears in both .*test\[~test\['audio'\]"):
        asr.fine_tune(train, eval_data=train.head(1), epochs=1, output_dir=tmp_path / "r2", progress=False)
