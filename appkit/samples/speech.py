"""Speech sample data for the speech-recognition case studies: real clips from Debian packages, plus TTS.

Every function returns a pandas DataFrame with `audio` (absolute path to a 16 kHz mono
wav), `text` (reference transcript, normalised: lower case, no punctuation) and slice
columns (`source`, `speaker`, `synthetic`, ...). Nothing is downloaded; derived files
(resampled or synthesised audio) are written once under the appkit cache dir and reused.

Debian packages needed (`apt-get install -y ...`):
    pocketsphinx-testdata            librivox_clips()      real LibriVox read speech (BSD-2)
    asterisk-core-sounds-en-wav      asterisk_prompts()    real IVR prompts, 8 kHz (CC-BY-SA-3.0)
    asterisk-core-sounds-en          asterisk_prompts()    their transcripts (core-sounds-en.txt.gz)
    sox                              synthesize_speech()   rate/channel conversion, telephone band
    flite                            synthesize_speech(engine="flite")
    festival festvox-us-slt-hts      synthesize_speech(engine="festival")
    espeak-ng                        synthesize_speech(engine="espeak-ng")
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import AppkitError, DataError, _msg, unknown_name
from ._sources import cache_root

SAMPLE_RATE = 16000
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK_WAV_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

# engine -> (binary, Debian packages, default voice)
ENGINES = {
    "flite": ("flite", "flite", "slt"),
    "festival": ("text2wave", "festival festvox-us-slt-hts", "cmu_us_slt_arctic_hts"),
    "espeak-ng": ("espeak-ng", "espeak-ng", "en-us"),
}


# ---------------------------------------------------------------- shared helpers
def normalize_text(text: str) -> str:
    """Lower case, numbers as words, no punctuation but apostrophes: how WER is scored here (the one
    normaliser, appkit.metrics.normalise_text, so a sample's reference reads as the metric compares it)."""
    from ..metrics import normalise_text

    return normalise_text(text)


def _need_file(path: Path, package: str) -> Path:
    if not path.exists():
        raise DataError(_msg(f"The sample data file {path.name} is not installed", where=str(path),
                             expected=f"the Debian package {package}",
                             fix=f"run `sudo apt-get install -y {package}`"))
    return path


def _write_wav_atomic(path: Path, audio, sr: int) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)  # a reader never sees half a file


def _to_16k(src: Path, dst: Path) -> Path:
    """Resampled copy (soxr, deterministic) unless already done."""
    if not dst.exists():
        import numpy as np
        import soundfile as sf

        from appkit.media import resample   # the one resampler (soxr HQ)

        audio, sr = sf.read(src, dtype="float32", always_2d=True)
        audio = resample(audio.mean(axis=1), sr, SAMPLE_RATE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _write_wav_atomic(dst, np.clip(audio, -1, 1), SAMPLE_RATE)
    return dst


def _duration(path: Path) -> float:
    import soundfile as sf

    return round(sf.info(path).duration, 3)


# ---------------------------------------------------------------- real speech
def librivox_clips():
    """5 real LibriVox clips (Sense and Sensibility, one reader, 16 kHz) with transcripts."""
    import pandas as pd

    lines = _need_file(LIBRIVOX_DIR / "transcription", "pocketsphinx-testdata").read_text().splitlines()
    rows = []
    for line in lines:
        m = re.match(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
        if m:
            wav = _need_file(LIBRIVOX_DIR / f"{m.group(2)}.wav", "pocketsphinx-testdata")
            rows.append({"audio": str(wav), "text": normalize_text(m.group(1)), "source": "librivox",
                         "speaker": "librivox-sense-and-sensibility-reader", "synthetic": False,
                         "duration_s": _duration(wav), "id": m.group(2)})
    return pd.DataFrame(rows)


_PLAIN = re.compile(r"^[A-Za-z][A-Za-z ,.'?!;:-]*$")  # no digits, brackets, #, *, ...


def _asterisk_transcripts() -> dict:
    out = {}
    with gzip.open(_need_file(ASTERISK_TXT, "asterisk-core-sounds-en"), "rt", encoding="utf-8") as fh:
        for line in fh:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";"):
                out[name.strip()] = " ".join(text.split())
    return out


def asterisk_prompts(n: int | None = None, seed: int = 0):
    """Real telephone prompts (Allison Smith, one speaker), resampled from 8 to 16 kHz.

    Only prompts whose transcript is plain words are kept (no "[beep tone]", "press *",
    "press 1"), since a digit or symbol has several valid spellings in a transcript.
    `n` picks a seeded random subset; the order is stable for a given seed.
    """
    import pandas as pd

    _need_file(ASTERISK_WAV_DIR, "asterisk-core-sounds-en-wav")
    rows = []
    for name, raw in sorted(_asterisk_transcripts().items()):
        wav = ASTERISK_WAV_DIR / f"{name}.wav"
        if _PLAIN.match(raw) and wav.exists() and normalize_text(raw):
            rows.append({"name": name, "raw_text": raw, "text": normalize_text(raw), "src": wav})
    df = pd.DataFrame(rows)
    if n is not None:
        df = df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)
    cache = cache_root() / f"asterisk-16k-{_generator_key()}"
    df["audio"] = [str(_to_16k(src, cache / f"{name.replace('/', '__')}.wav"))
                   for name, src in zip(df["name"], df["src"])]
    df["source"], df["speaker"], df["synthetic"] = "asterisk", "allison-smith", False
    df["category"] = [nm.split("/")[0] if "/" in nm else "prompt" for nm in df["name"]]
    df["duration_s"] = [_duration(Path(a)) for a in df["audio"]]
    return df[["audio", "text", "source", "speaker", "synthetic", "category", "duration_s", "name", "raw_text"]]


# ---------------------------------------------------------------- synthetic speech
def _engine_binary(engine: str) -> str:
    if engine not in ENGINES:
        raise unknown_name("speech engine", engine, ENGINES)
    binary, package, _ = ENGINES[engine]
    path = shutil.which(binary)
    if path is None:
        raise AppkitError(_msg(f"The speech synthesiser {engine!r} is not installed",
                               where=f"program {binary!r} on PATH", expected=f"the Debian package(s) {package}",
                               fix=f"run `sudo apt-get install -y {package}`"))
    return path


def _run(cmd: list, text: str | None = None) -> None:
    done = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AppkitError(_msg(f"{Path(cmd[0]).name} failed: {done.stderr.strip()[:300]}",
                               where=" ".join(map(str, cmd))[:200]))


def _tts(engine: str, voice: str, sentence: str, wav: Path) -> None:
    binary = _engine_binary(engine)
    if engine == "flite":
        _run([binary, "-voice", voice, "-t", sentence, "-o", str(wav)])
    elif engine == "festival":  # text2wave reads the text from stdin
        _run([binary, "-eval", f"(voice_{voice})", "-o", str(wav)], text=sentence)
    else:
        _run([binary, "-v", voice, "-w", str(wav), sentence])


def _sox_16k(src: Path, dst: Path, telephone: bool) -> None:
    sox = shutil.which("sox")
    if sox is None:
        raise AppkitError(_msg("The audio tool sox is not installed", expected="the Debian package sox",
                               fix="run `sudo apt-get install -y sox`"))
    # 8 kHz round trip + 300-3400 Hz band-pass is what a phone line does to a voice.
    band = ["rate", "8k", "sinc", "300-3400"] if telephone else []
    # -D: no dither, so the output is bit-identical from run to run; float out, we add noise next
    _run([sox, "-D", str(src), "-e", "floating-point", "-b", "32", str(dst), "remix", "-",
          *band, "rate", str(SAMPLE_RATE)])


def _add_noise(audio, snr_db: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    power = float(np.mean(audio**2)) or 1e-8
    noise = rng.standard_normal(audio.shape).astype("float32") * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 1.0)


def _clip_key(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:10]


def _program_stamp(path: str | None) -> str:
    st = os.stat(path) if path else None
    return f"{path}|{st.st_size}|{st.st_mtime_ns}" if st else "-"


def _generator_key(engine: str | None = None) -> str:
    """What makes a cached clip besides its arguments: the source of the functions that write it and the
    programs they run (an upgraded sox or TTS voice). A change to either makes new files, so a cached
    clip is never used in place of what the current code would make."""
    import inspect

    import soxr

    funcs = (_to_16k, _write_wav_atomic) if engine is None else (_synthesize_one, _tts, _sox_16k, _add_noise,
                                                                  _write_wav_atomic)
    progs = [] if engine is None else [shutil.which("sox"), shutil.which(ENGINES.get(engine, ("",))[0])]
    return _clip_key(*(inspect.getsource(f) for f in funcs), soxr.__version__, *map(_program_stamp, progs))


def synthesize_speech(sentences: Iterable[str], out_dir, *, engine: str = "flite", voice: str | None = None,
                      noise_db: float | None = None, telephone: bool = False, seed: int = 0):
    """Speak each sentence with a Debian TTS engine into `out_dir` as 16 kHz mono wavs.

    noise_db: signal-to-noise ratio in dB of added white noise (20 mild, 5 heavy); None = clean.
    telephone: pass through a 300-3400 Hz phone band. Files are named by a hash of all
    settings and of the code and programs that make them, so calling again with the same arguments
    reuses them. Every row is synthetic.
    """
    import pandas as pd
    import soundfile as sf

    voice = voice or ENGINES.get(engine, (None, None, None))[2]
    _engine_binary(engine)  # fail before any work if missing
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    generator = _generator_key(engine)
    rows = []
    for i, sentence in enumerate(sentences):
        if not str(sentence).strip():
            raise DataError(_msg("A sentence to synthesise is empty", where=f"item {i}",
                                 fix="remove empty sentences"))
        key = _clip_key(sentence, engine, voice, noise_db, telephone, seed + i, generator)
        wav = out / f"{engine}-{i:04d}-{key}.wav"
        if not wav.exists():
            _synthesize_one(sentence, wav, engine, voice, noise_db, telephone, seed + i)
        rows.append({"audio": str(wav), "text": normalize_text(sentence), "raw_text": sentence,
                     "source": f"tts-{engine}", "speaker": f"{engine}-{voice}", "synthetic": True,
                     "engine": engine, "noise_db": noise_db, "telephone": telephone,
                     "duration_s": round(sf.info(wav).duration, 3)})
    return pd.DataFrame(rows)


def _synthesize_one(sentence, wav, engine, voice, noise_db, telephone, seed) -> None:
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="appkit-tts-") as tmp:
        raw, conv = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        _tts(engine, voice, str(sentence), raw)
        _sox_16k(raw, conv, telephone)
        audio, _ = sf.read(conv, dtype="float32")
        if noise_db is not None:
            audio = _add_noise(audio, noise_db, seed)
        _write_wav_atomic(wav, audio, SAMPLE_RATE)


# ---------------------------------------------------------------- domain vocabulary set
# Generic drug names Whisper tiny.en tends to misspell or split (measured: see tests/report).
DRUG_NAMES = [
    "omeprazole", "metoprolol", "atorvastatin", "levothyroxine", "amlodipine", "lisinopril",
    "gabapentin", "sertraline", "escitalopram", "hydrochlorothiazide", "montelukast", "rosuvastatin",
    "pantoprazole", "losartan", "clopidogrel", "tamsulosin", "duloxetine", "venlafaxine",
    "bupropion", "carvedilol", "spironolactone", "furosemide", "apixaban", "rivaroxaban",
    "dapagliflozin", "empagliflozin", "semaglutide", "sitagliptin", "methotrexate", "adalimumab",
    "prednisolone", "azithromycin", "ciprofloxacin", "doxycycline", "levetiracetam", "lamotrigine",
    "quetiapine", "aripiprazole", "ondansetron", "clonazepam",
]
# No numbers: "twenty" vs "20" would count as an error that has nothing to do with the drug.
DRUG_TEMPLATES = [
    "Please take the {d} every morning with water.",
    "The doctor prescribed {d} for my condition.",
    "I stopped taking {d} because of the side effects.",
    "Is it safe to drink alcohol while on {d}?",
    "My pharmacy is out of {d} this week.",
    "She has been on {d} since last spring.",
    "Remind me to refill the {d} before Friday.",
    "Does {d} interact with my other medicine?",
]


def drug_name_sentences(n: int = 40, seed: int = 0):
    """Seeded sentences that each contain one generic drug name (columns text, term, template).

    Every drug appears before any repeats, and its sentences use different templates,
    so a split by template keeps each drug on both sides while sentences differ.
    """
    import random

    import pandas as pd

    rng = random.Random(seed)
    drugs = DRUG_NAMES[:]
    rng.shuffle(drugs)
    first = {d: rng.randrange(len(DRUG_TEMPLATES)) for d in drugs}
    rows = []
    for i in range(n):
        drug = drugs[i % len(drugs)]
        t = (first[drug] + i // len(drugs)) % len(DRUG_TEMPLATES)  # a repeat gets the next template
        rows.append({"text": DRUG_TEMPLATES[t].format(d=drug), "term": drug, "template": t})
    return pd.DataFrame(rows)


def drug_name_speech(n: int = 40, seed: int = 0, *, engine: str = "flite", voice: str | None = None,
                     noise_db: float | None = None, telephone: bool = False):
    """`drug_name_sentences` spoken by a TTS engine, cached under the appkit cache dir."""
    sentences = drug_name_sentences(n, seed)
    key = _clip_key(n, seed, engine, voice, noise_db, telephone)
    df = synthesize_speech(sentences["text"], cache_root() / f"drug-names-{key}", engine=engine,
                           voice=voice, noise_db=noise_db, telephone=telephone, seed=seed)
    df["term"], df["template"] = sentences["term"].values, sentences["template"].values
    return df
