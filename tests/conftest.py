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
    result_keys: set          # keys every result dict has
    metric_keys: set          # keys evaluate().metrics has at least
    input_column: str = "text"
    extra: dict = field(default_factory=dict)


WORDS = ("good great excellent love wonderful fine happy best nice superb "
         "bad awful terrible hate horrible poor sad worst ugly broken "
         "the a and it is was this product drug review very not really").split()


def make_tiny_bert_folder(path, *, init: float = 0.02) -> str:
    """A random 2-layer BERT encoder (hidden 32) with its own WordPiece vocabulary, saved like MiniLM."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!"]
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
                    bad_input="   ", bad_match="empty text", result_keys={"label", "score", "scores"},
                    metric_keys={"accuracy", "macro_f1"})


TINY: dict[str, Callable[[Any], TinyCase]] = {"text-classification": tiny_text}


@pytest.fixture
def tiny_text_case(tmp_path) -> TinyCase:
    return tiny_text(tmp_path)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Checkpoints and reports default to ./runs: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)
