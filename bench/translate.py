"""appkit translation vs transformers: the same model folder, the same held-out strings.

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

The shipped appkit-mt-en-de (or --model FOLDER) on data/mt-en-de-heldout/heldout.tsv. transformers 5 has
no "translation" pipeline any more (its migration guide points to generate), so the peer is the plain loop
an application writes by hand: AutoModelForSeq2SeqLM + tokenizer + generate with the model's own generation
settings (4 beams), max_new_tokens=256:
  - by default one text per call in float32;
  - batched (--batch-size, in the file's order) in float32, and batched with the weights in bfloat16
    (`dtype=torch.bfloat16`, where the CPU has native bf16): its best documented settings here.
appkit sorts by length, gives each text its own length budget, splits long inputs on sentences and uses
bf16 where the CPU computes it natively; same beams.

CTranslate2 (when its wheel is installed; it comes with the `bench` extra, otherwise the side is reported skipped):
the same folder converted once to a temp dir (int8 and float32 weights; the conversion is timed and printed, not
part of the rounds), `Translator(device="cpu", inter_threads=1, intra_threads=torch.get_num_threads())`, the
model's own tokenizer for the tokens, `translate_batch` with the same beams, the same batch size as the generate
sides, max_decoding_length=256 and `<pad>` suppressed (the model's bad_words_ids). CTranslate2's Marian converter
assumes the OPUS-MT layout (`<pad>` the last token, the decoder started from a zero embedding); this model has
`<pad>` at id 0 with a trained embedding that generate starts the decoder from, so for such a folder the
converter is told to keep `<pad>` and start from it, as generate does (float32 CT2 then matches generate's
float32 text on most strings; the stock conversion refuses the vocabulary).

Prints segments/s, chrF / BLEU against the references and the ratios, and records the headline rows for
bench/table.py.

    .venv/bin/python bench/translate.py [--model appkit-mt-en-de] [--rounds 3] [--n 600] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from _fair import interleaved, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "mt-en-de-heldout" / "heldout.tsv"


def ct2_convert(folder: str, tok, out: str, quantization: str) -> None:
    """Convert a Marian folder with CTranslate2's TransformersConverter. When the model's <pad> is not its last
    token (CTranslate2's Marian loader assumes the OPUS-MT layout: it drops the last row as <pad> and starts the
    decoder from a zero embedding), the loader is told, for this call only, to keep the vocabulary as it is and
    start the decoder from <pad>, which is what transformers' generate does with this model."""
    import ctranslate2
    from ctranslate2.converters import transformers as ct2t

    loader = ct2t.MarianMTLoader
    if tok.pad_token_id == len(tok) - 1:
        ctranslate2.converters.TransformersConverter(folder).convert(out, quantization=quantization)
        return

    def get_model_spec(self, model):
        model.config.normalize_before = False
        model.config.normalize_embedding = False
        return ct2t.BartLoader.get_model_spec(self, model)        # the Marian settings, no <pad> row removed

    def set_config(self, config, model, tokenizer):
        config.eos_token, config.unk_token = tokenizer.eos_token, tokenizer.unk_token
        config.decoder_start_token = tokenizer.pad_token           # generate's decoder_start_token_id

    patched = {"get_model_spec": get_model_spec, "set_config": set_config,
               "set_decoder": ct2t.BartLoader.set_decoder,      # no start_from_zero_embedding
               "get_vocabulary": ct2t.BartLoader.get_vocabulary}  # keep <pad>
    saved = {k: loader.__dict__[k] for k in patched}
    try:
        for k, v in patched.items():
            setattr(loader, k, v)
        ctranslate2.converters.TransformersConverter(folder).convert(out, quantization=quantization)
    finally:
        for k, v in saved.items():
            setattr(loader, k, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="appkit-mt-en-de")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import importlib.util
    import tempfile
    import time
    import warnings

    import pandas as pd
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import appkit
    from appkit.metrics import bleu_chrf
    from appkit.runtime import bf16_native

    warnings.simplefilter("ignore")
    hf_logging.set_verbosity_error()
    df = pd.read_csv(HELDOUT, sep="\t", keep_default_na=False).head(args.n)
    texts, refs = list(df.source), list(df.target)
    mt = appkit.load("translation", args.model)
    folder = mt.meta.get("source") or args.model
    tok = AutoTokenizer.from_pretrained(folder)
    bf16 = bf16_native("cpu")
    best = "bf16 weights" if bf16 else "float32"
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32).eval()
    model16 = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
    bs = args.batch_size

    def plain(m, batch_texts, size):
        out = []
        with torch.inference_mode():
            for k in range(0, len(batch_texts), size):
                enc = tok(batch_texts[k:k + size], return_tensors="pt", padding=True)
                ids = m.generate(**enc, max_new_tokens=256)
                out += [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        return out

    beams = getattr(model.generation_config, "num_beams", 1) or 1
    ours_prec = "bf16 autocast" if mt._use_bf16() else "float32"
    # name -> (batching, precision, run)
    sides = {
        "generate, 1 text/call": ("1 text/call", "float32", lambda t: plain(model, t, 1)),
        f"generate batch {bs}": (f"batch {bs}, file order", "float32", lambda t: plain(model, t, bs)),
        f"generate batch {bs} {best}": (f"batch {bs}, file order", best, lambda t: plain(model16, t, bs)),
        "appkit predict": ("length-sorted", ours_prec, lambda t: [r["translation"] for r in mt.predict(t, progress=False)]),
    }
    ct2_sides: list[str] = []
    ct2_tmp = None
    if importlib.util.find_spec("ctranslate2") is not None:
        import ctranslate2

        ct2_tmp = tempfile.TemporaryDirectory(prefix="ct2-mt-")

        def ct2_run(translator, batch_texts):
            tokens = [tok.convert_ids_to_tokens(tok.encode(t)) for t in batch_texts]
            res = translator.translate_batch(tokens, beam_size=beams, max_batch_size=bs, max_decoding_length=256,
                                             suppress_sequences=[[tok.pad_token]])
            return [tok.decode(tok.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
                    for r in res]

        for quant in ("int8", "float32"):
            out_dir = os.path.join(ct2_tmp.name, quant)
            t0 = time.perf_counter()
            ct2_convert(str(folder), tok, out_dir, quant)
            print(f"CTranslate2 {ctranslate2.__version__}: converted to {quant} in {time.perf_counter() - t0:.1f} s "
                  f"(once, not timed in the rounds)")
            translator = ctranslate2.Translator(out_dir, device="cpu", inter_threads=1,
                                                intra_threads=torch.get_num_threads())
            name = f"CTranslate2 {quant}"
            sides[name] = (f"batch {bs}, file order", quant, lambda t, tr=translator: ct2_run(tr, t))
            ct2_sides.append(name)
    else:
        print("CTranslate2: skipped (not installed)")
    memory: dict[str, float] = {}
    seconds, outs, _ = interleaved({k: (lambda f=f: f(texts)) for k, (_, _, f) in sides.items()}, rounds=args.rounds,
                                   warmups={k: (lambda f=f: f(texts[:16])) for k, (_, _, f) in sides.items()},
                                   memory=memory)
    scores = {k: bleu_chrf(refs, outs[k]) for k in sides}
    print(f"\n{len(texts)} held-out segments, model {args.model}, {args.rounds} interleaved rounds (median), "
          f"all sides {beams} beams (the model's generation config)")
    print(f"{'how':<36}{'batching':<24}{'precision':<15}{'seg/s':>8}{'chrF':>7}{'BLEU':>7}{'memory MB':>11}")
    for k, (batching, prec, _) in sides.items():
        print(f"{k:<36}{batching:<24}{prec:<15}{len(texts) / seconds[k]:>8.1f}{scores[k]['chrf']:>7.1f}"
              f"{scores[k]['bleu']:>7.1f}{memory[k]:>11.0f}")
    peers = [k for k in sides if k != "appkit predict" and k not in ct2_sides]
    best_peer = min(peers, key=seconds.get)

    def row(peer: str, shown: str, notes: str) -> dict:
        return {"task": f"translate en-de ({len(texts)} held-out)", "appkit": f"predict ({ours_prec})",
                "peer": shown, "appkit_s": round(seconds["appkit predict"], 1), "peer_s": round(seconds[peer], 1),
                "quality": f"chrF {scores['appkit predict']['chrf']:.1f} vs {scores[peer]['chrf']:.1f}",
                "memory": f"{memory['appkit predict']:.0f} vs {memory[peer]:.0f} MB", "notes": notes}

    rows = []
    for peer in dict.fromkeys(["generate, 1 text/call", best_peer]):
        print(f"appkit predict vs {peer}: {seconds[peer] / seconds['appkit predict']:.2f}x")
        rows.append(row(peer, f"{peer} ({sides[peer][1]})", f"{beams} beams both"))
    for peer in ct2_sides:
        print(f"appkit predict vs {peer}: {seconds[peer] / seconds['appkit predict']:.2f}x "
              f"({len(texts) / seconds['appkit predict']:.1f} vs {len(texts) / seconds[peer]:.1f} segments/s, "
              f"chrF {scores['appkit predict']['chrf']:.1f} vs {scores[peer]['chrf']:.1f})")
    if "CTranslate2 int8" in ct2_sides:
        rows.append(row("CTranslate2 int8", f"CTranslate2 int8 (batch {bs})",
                        f"{beams} beams both, int8 vs {'bf16' if mt._use_bf16() else 'float32'}"))
    record("translate", rows)
    if ct2_tmp is not None:
        ct2_tmp.cleanup()


if __name__ == "__main__":
    main()
