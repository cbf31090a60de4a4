"""Train appkit's shipped English->German model from scratch on the corpus of scripts/mt_corpus.py.

A shared SentencePiece unigram vocabulary (8k, byte fallback so no character is unknown, printf / Qt
placeholders such as ``%s`` ``%1`` ``%%`` kept as whole pieces) and a small Marian transformer
(d_model 256, 3+3 layers, 4 heads, FFN 1024, shared embeddings: ~7.7M parameters), trained with
AdamW (lr 1e-3, betas 0.9/0.98), 800 warm-up steps then inverse square root, label smoothing 0.1,
length-bucketed batches of ~3,000 tokens. The tokenizer is laid out as an opus-mt folder
(source.spm, target.spm, vocab.json: MarianTokenizer), so the result is a plain transformers folder.

Resumable: a checkpoint is written every --checkpoint-minutes (and on SIGTERM / SIGINT); running the
same command again continues from it. Progress lines: step, passes, loss, target tokens/s, and every
--eval-minutes a greedy chrF on a small slice of held-out application strings.

    python scripts/train_mt.py --corpus /work/cache/mt/corpus --run /work/cache/mt/run --minutes 60
    python scripts/train_mt.py --run /work/cache/mt/run --export appkit/models/appkit-mt-en-de
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

PLACEHOLDERS = ["%s", "%d", "%u", "%i", "%f", "%x", "%c", "%ld", "%lu", "%lld", "%llu", "%zu", "%%", "%'d",
                *[f"%{i}" for i in range(1, 10)], *[f"%{i}$s" for i in range(1, 6)], *[f"%{i}$d" for i in range(1, 6)],
                "{0}", "{1}", "{2}", "{}", "%(name)s", "${", "\\n"]
PAD, EOS, UNK = 0, 1, 2
MAX_TOKENS = 128             # per side in training; longer pairs are few and slow


def read_tsv(path: Path) -> list[tuple[str, str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        r = csv.reader(fh, delimiter="\t")
        next(r)
        return [tuple(row) for row in r]


def build_tokenizer(pairs, run: Path, vocab_size: int) -> Path:
    """Train the shared SentencePiece model once and lay it out as MarianTokenizer files."""
    import sentencepiece as spm

    tok_dir = run / "tokenizer"
    if (tok_dir / "vocab.json").exists():
        return tok_dir
    tok_dir.mkdir(parents=True, exist_ok=True)
    text = [s for en, de, _ in pairs for s in (en, de)]
    random.Random(0).shuffle(text)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_prefix=str(tok_dir / "shared"), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, byte_fallback=True, pad_id=PAD, eos_id=EOS, unk_id=UNK,
        bos_id=-1, user_defined_symbols=PLACEHOLDERS, normalization_rule_name="identity",
        input_sentence_size=400_000, shuffle_input_sentence=True, num_threads=2, minloglevel=1)
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "shared.model"))
    for name in ("source.spm", "target.spm"):
        (tok_dir / name).write_bytes((tok_dir / "shared.model").read_bytes())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab.update({"<pad>": PAD, "</s>": EOS, "<unk>": UNK})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    return tok_dir


def encode(pairs, tok_dir: Path, run: Path):
    """Token ids of every pair (cached): the same ids MarianTokenizer gives, since vocab.json is the spm's own."""
    import sentencepiece as spm
    import torch

    cache = run / "encoded.pt"
    if cache.exists():
        return torch.load(cache)
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "shared.model"))
    src = sp.encode([en for en, _, _ in pairs])
    tgt = sp.encode([de for _, de, _ in pairs])
    data = [(s + [EOS], t + [EOS]) for s, t in zip(src, tgt) if len(s) < MAX_TOKENS and len(t) < MAX_TOKENS]
    torch.save(data, cache)
    return data


def make_model(vocab_size: int, *, positions: int = 512):
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=vocab_size, decoder_vocab_size=vocab_size, d_model=256, encoder_layers=3,
                       decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                       decoder_ffn_dim=1024, max_position_embeddings=positions, pad_token_id=PAD, eos_token_id=EOS,
                       decoder_start_token_id=PAD, forced_eos_token_id=EOS, dropout=0.1, attention_dropout=0.0,
                       activation_dropout=0.0, activation_function="swish", scale_embedding=True,
                       share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    model = MarianMTModel(cfg)
    g = model.generation_config
    g.num_beams, g.max_length, g.bad_words_ids = 4, 256, [[PAD]]
    g.decoder_start_token_id, g.pad_token_id, g.eos_token_id, g.forced_eos_token_id = PAD, PAD, EOS, EOS
    return model


def batches(data, *, max_tokens: int, seed: int):
    """Length-bucketed batches (similar lengths together, so little padding), in a seeded random order."""
    rng = random.Random(seed)
    order = sorted(range(len(data)), key=lambda i: (len(data[i][1]) + rng.random() * 2, len(data[i][0])))
    out, cur, longest = [], [], 0
    for i in order:
        longest_if = max(longest, len(data[i][0]), len(data[i][1]))
        if cur and longest_if * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest_if = [], max(len(data[i][0]), len(data[i][1]))
        cur.append(i)
        longest = longest_if
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(data, idx):
    import torch

    src = [data[i][0] for i in idx]
    tgt = [data[i][1] for i in idx]
    s_len, t_len = max(map(len, src)), max(map(len, tgt))
    input_ids = torch.full((len(idx), s_len), PAD)
    labels = torch.full((len(idx), t_len), -100)
    dec_in = torch.full((len(idx), t_len), PAD)               # decoder starts from <pad>, as Marian does
    for k, (s, t) in enumerate(zip(src, tgt)):
        input_ids[k, :len(s)] = torch.tensor(s)
        labels[k, :len(t)] = torch.tensor(t)
        dec_in[k, 1:len(t)] = torch.tensor(t[:-1])
    return input_ids, input_ids.ne(PAD), dec_in, labels


def chrf_slice(model, tok_dir: Path, rows, *, beams: int = 1) -> float:
    import sacrebleu
    import torch
    from transformers import MarianTokenizer

    tok = MarianTokenizer(str(tok_dir / "source.spm"), str(tok_dir / "target.spm"), str(tok_dir / "vocab.json"))
    model.eval()
    hyps = []
    with torch.inference_mode():
        for k in range(0, len(rows), 32):
            chunk = [r[0] for r in rows[k:k + 32]]
            enc = tok(chunk, return_tensors="pt", padding=True)
            out = model.generate(**enc, num_beams=beams, max_length=96)
            hyps += tok.batch_decode(out, skip_special_tokens=True)
    model.train()
    return sacrebleu.corpus_chrf(hyps, [[r[1] for r in rows]]).score


def save_checkpoint(path: Path, state) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)                                      # never a half-written checkpoint


def train(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    run = args.run
    run.mkdir(parents=True, exist_ok=True)
    pairs = read_tsv(args.corpus / "train.tsv")
    tok_dir = build_tokenizer(pairs, run, args.vocab_size)
    data = encode(pairs, tok_dir, run)
    monitor = read_tsv(args.corpus / "test_apps.tsv")
    random.Random(1).shuffle(monitor)
    monitor = monitor[:150]
    vocab_size = len(json.loads((tok_dir / "vocab.json").read_text()))
    torch.manual_seed(0)
    model = make_model(vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01)
    state = {"step": 0, "epoch": 0, "pos": 0, "seconds": 0.0, "tokens": 0}
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resumed at step {state['step']} (pass {state['epoch']}, batch {state['pos']}, "
              f"{state['seconds'] / 60:.1f} min trained)", flush=True)
    print(f"{len(data)} training pairs, vocabulary {vocab_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)

    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.update(now=True))

    def checkpoint():
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state})
        print(f"checkpoint at step {state['step']}", flush=True)

    model.train()
    started, last_ckpt, last_eval = time.time(), time.time(), time.time()
    seconds0, window_loss, window_tok, window_t = state["seconds"], [], 0, time.time()
    deadline = started + args.minutes * 60
    while not stop["now"] and time.time() < deadline:
        plan = batches(data, max_tokens=args.batch_tokens, seed=state["epoch"])
        while state["pos"] < len(plan) and not stop["now"] and time.time() < deadline:
            input_ids, mask, dec_in, labels = collate(data, plan[state["pos"]])
            step = state["step"] + 1
            lr = args.lr * min(step / args.warmup, math.sqrt(args.warmup / step))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=dec_in).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                                   label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n_tok = int(labels.ne(-100).sum())
            state.update(step=step, pos=state["pos"] + 1, tokens=state["tokens"] + n_tok,
                         seconds=seconds0 + time.time() - started)
            window_loss.append(loss.item())
            window_tok += n_tok
            if step % args.log_every == 0:
                dt = time.time() - window_t
                print(f"step {step} pass {state['epoch'] + state['pos'] / len(plan):.2f} "
                      f"loss {sum(window_loss) / len(window_loss):.3f} lr {lr:.2e} {window_tok / dt:.0f} tgt tok/s "
                      f"{state['seconds'] / 60:.1f} min", flush=True)
                window_loss, window_tok, window_t = [], 0, time.time()
            if time.time() - last_eval > args.eval_minutes * 60:
                print(f"step {step} held-out app strings (150, greedy) chrF {chrf_slice(model, tok_dir, monitor):.1f}",
                      flush=True)
                last_eval = window_t = time.time()
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
        if state["pos"] >= len(plan):
            state.update(epoch=state["epoch"] + 1, pos=0)
    checkpoint()
    if not stop["now"]:           # asked to stop: go at once; the export and evaluation measure the model
        print(f"time is up at step {state['step']}; held-out app strings (150, greedy) chrF "
              f"{chrf_slice(model, tok_dir, monitor):.1f}", flush=True)


def export(args) -> None:
    """The checkpoint as a plain transformers Marian folder, weights in float16 safetensors (half the size;
    appkit and from_pretrained(dtype=torch.float32) upcast on load)."""
    import torch
    from transformers import MarianTokenizer

    tok_dir = args.run / "tokenizer"
    vocab_size = len(json.loads((tok_dir / "vocab.json").read_text()))
    # 256 positions: trained on pairs under 128 tokens, appkit splits longer input on sentences above 256
    model = make_model(vocab_size, positions=256)
    weights = {k: v for k, v in torch.load(args.run / "checkpoint.pt", weights_only=False)["model"].items()
               if "embed_positions" not in k}                   # fixed sinusoids, recomputed for 256 positions
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all("embed_positions" in k for k in missing), (missing, unexpected)
    model.eval().half().save_pretrained(args.export)
    config = json.loads((args.export / "config.json").read_text())
    config["dtype"] = "float32"           # stored in float16 to halve the size; computed in float32 when loaded
    (args.export / "config.json").write_text(json.dumps(config, indent=2))
    tok = MarianTokenizer(str(tok_dir / "source.spm"), str(tok_dir / "target.spm"), str(tok_dir / "vocab.json"),
                          source_lang="en", target_lang="de")
    tok.save_pretrained(args.export)
    print(f"exported to {args.export}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/mt/corpus"))
    ap.add_argument("--run", type=Path, default=Path("/work/cache/mt/run"))
    ap.add_argument("--minutes", type=float, default=60.0, help="training time of this run (resume adds more)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=800)
    ap.add_argument("--batch-tokens", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-minutes", type=float, default=15.0)
    ap.add_argument("--checkpoint-minutes", type=float, default=4.0)
    ap.add_argument("--export", type=Path, default=None, help="write the checkpoint as a model folder and stop")
    args = ap.parse_args(argv)
    export(args) if args.export else train(args)


if __name__ == "__main__":
    sys.exit(main())
