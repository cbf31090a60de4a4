"""Text classification on a tiny random BERT built in the test (seconds, nothing from outside)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import appkit
from appkit.errors import AppkitError, DataError, NotTrainedError

from ..conftest import make_tiny_bert_folder, text_train_frame


@pytest.fixture
def folder(tmp_path):
    return make_tiny_bert_folder(tmp_path / "bert")


def test_zero_shot_before_training_uses_label_names(folder):
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    assert clf.mode == "zero-shot"
    r = clf.predict("positive")
    assert set(r["scores"]) == {"negative", "positive"}
    assert sum(r["scores"].values()) == pytest.approx(1, abs=1e-4)
    # a text identical to a label name: cosine similarity 1, so that label wins (whichever it is)
    assert r["label"] == "positive" and clf.predict("negative")["label"] == "negative"


def test_label_descriptions_change_the_prediction(folder):
    def load(descriptions):
        return appkit.load("text-classification", folder, labels=["negative", "positive"],
                           label_descriptions=descriptions)

    texts = ["good great", "bad awful"]
    one = load({"positive": "good great", "negative": "bad awful"}).predict(texts)
    swapped = load({"positive": "bad awful", "negative": "good great"}).predict(texts)
    plain = load(None).predict(texts)
    assert [r["label"] for r in one] == ["positive", "negative"]
    assert [r["label"] for r in swapped] == ["negative", "positive"]
    assert [r["scores"] for r in plain] != [r["scores"] for r in one]   # the names alone score differently


def test_no_labels_yet_says_how_to_name_them(folder):
    clf = appkit.load("text-classification", folder)
    with pytest.raises(NotTrainedError, match=re.escape("labels=['...', '...']")):
        clf.predict("good")


def test_bad_texts_name_the_position(folder):
    clf = appkit.load("text-classification", folder, labels=["a", "b"])
    with pytest.raises(DataError, match="Input 2 is a float"):
        clf.predict(["good", "bad", float("nan")])
    with pytest.raises(DataError, match="Input 0 is empty text"):
        clf.predict([""])
    with pytest.raises(DataError, match="Row 1 is empty text"):
        clf.predict(pd.DataFrame({"text": ["ok", " "]}))
    with pytest.raises(DataError, match="label_descriptions names \\['c'\\]"):
        appkit.load("text-classification", folder, labels=["a", "b"], label_descriptions={"c": "x"})
    with pytest.raises(DataError, match="at least two different"):
        appkit.load("text-classification", folder, labels=["a"])


def test_training_data_errors_come_before_any_model_work(folder):
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    train = text_train_frame()
    bad = train.copy()
    bad.loc[3, "label"] = "neutral"
    with pytest.raises(DataError, match="Row 3 of the training data has the label 'neutral'"):
        clf.fine_tune(bad, progress=False)
    ev = train.head(4).copy()
    ev.loc[2, "label"] = "meh"
    with pytest.raises(DataError, match="Row 2 of the evaluation data has the label 'meh'.*known labels"):
        clf.fine_tune(train, eval_data=ev, progress=False)
    with pytest.raises(DataError, match="Row 5 of the training data is a float"):
        clf.fine_tune(train.assign(text=[*train.text[:5], None, *train.text[6:]]), progress=False)
    with pytest.raises(AppkitError, match="early_stopping_patience needs validation data"):
        clf.fine_tune(train, early_stopping_patience=2, progress=False)


def test_labels_come_from_data_when_not_named(folder):
    clf = appkit.load("text-classification", folder)
    clf.fine_tune(text_train_frame(), epochs=1, progress=False)
    assert clf.labels == ["negative", "positive"] and clf.mode == "trained"


@pytest.mark.parametrize("strategy", ["head", "top", "full"])
def test_fine_tune_learns_the_toy_task(strategy, tmp_path):
    # a wider initialisation than BERT's 0.02: a random encoder whose [CLS] features differ between texts
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b", init=0.2))
    train = text_train_frame(48)
    kw = {"learning_rate": 3e-2, "epochs": 30} if strategy == "head" else {"learning_rate": 3e-3, "epochs": 8}
    run = clf.fine_tune(train, eval_data=train.head(12), strategy=strategy, output_dir=tmp_path / "r", progress=False, **kw)
    assert run.strategy == strategy
    assert run.history["train_loss"].dropna().iloc[-1] < run.history["train_loss"].dropna().iloc[0]
    assert "eval_macro_f1" in run.history.columns and run.metrics["accuracy"] >= 0.9
    report = clf.evaluate(train.head(12))
    assert report.metrics["accuracy"] >= 0.9 and report.confusion.shape == (2, 2)


def test_saved_folder_is_a_plain_transformers_classifier(folder, tmp_path):
    from transformers import pipeline

    clf = appkit.load("text-classification", folder)
    clf.fine_tune(text_train_frame(48), strategy="head", learning_rate=3e-2, epochs=20, progress=False)
    out = clf.save(tmp_path / "saved")
    meta = json.loads((out / "appkit.json").read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["mode"] == "trained"
    assert meta["training"]["strategy"] == "head" and len(meta["training"]["data_fingerprint"]) == 16
    texts = ["good great product", "hate it terrible", "the best drug"]
    ours = [r["label"] for r in clf.predict(texts)]
    pipe = pipeline("text-classification", model=str(out), device="cpu")
    assert [r["label"] for r in pipe(texts)] == ours


def _mean_pooling_folder(path) -> str:
    """The tiny BERT saved as a sentence-transformers encoder that pools by mean (as the packaged MiniLM)."""
    folder = make_tiny_bert_folder(path, init=0.2)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


def test_mean_layer_first_token_is_what_the_layer_outputs(tmp_path):
    import torch

    from appkit.tasks.text_classification import append_mean_pooling_layer, mean_layer_first_token

    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b", init=0.2), labels=["a", "b"])
    append_mean_pooling_layer(clf.model)
    batch = clf._collate(["good", "the best drug and really good", "hate it"])   # padded to different lengths
    encoder = clf.model.base_model.eval()
    with torch.no_grad():
        states = encoder(**batch, output_hidden_states=True).hidden_states
        cheap = mean_layer_first_token(encoder.encoder.layer[-1], states[-2], batch["attention_mask"])
    torch.testing.assert_close(cheap, states[-1][:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "bert+mean", "roberta"])
def test_predict_runs_the_last_layer_for_the_first_token_only_with_the_models_own_logits(arch, tmp_path):
    """Predict computes the last layer for the one position the head reads (first_token_output): its logits must be
    the whole model's, padding included, for each architecture it takes that shortcut on."""
    import torch

    from appkit.tasks.text_classification import _first_token_layer, append_mean_pooling_layer

    if arch == "roberta":
        folder = _tiny_classifier_folder(tmp_path / arch, arch, ["a", "b"])
    else:
        folder = make_tiny_bert_folder(tmp_path / arch, init=0.2)
    clf = appkit.load("text-classification", folder, labels=["a", "b"], precision="float32")
    if arch == "bert+mean":
        append_mean_pooling_layer(clf.model)
    clf.model.eval()
    assert _first_token_layer(clf._encoder()) is clf._encoder().encoder.layer[-1]
    batch = clf._collate(["good", "the best drug and really good", "hate it"])   # padded to different lengths
    with torch.no_grad():
        whole = clf.model.base_model(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(clf._features(dict(batch)), whole, atol=1e-5, rtol=1e-4)
        clf.mode = "trained"     # the head as it is (random here): predict's logits are the whole model's
        torch.testing.assert_close(clf._forward(dict(batch)), clf.model(**batch).logits, atol=1e-5, rtol=1e-4)
    clf.model.train()          # dropout on: the stock path, not the shortcut
    assert _first_token_layer(clf._encoder()) is None


def test_the_first_token_shortcut_is_not_taken_for_other_architectures(tmp_path):
    from appkit.tasks.text_classification import _first_token_layer

    clf = appkit.load("text-classification", _tiny_classifier_folder(tmp_path / "d", "distilbert", ["a", "b"]))
    assert _first_token_layer(clf._encoder().eval()) is None
    assert clf.predict("good product")["label"] in {"a", "b"}


def test_top_on_cached_token_states_gives_the_models_own_logits(tmp_path):
    """Strategy "top" trains a module on cached inputs of the last pretrained layer: before training, that module
    on those inputs must give exactly what the whole model gives (else it trains something the saved model is not)."""
    import torch

    from appkit.tasks.text_classification import append_mean_pooling_layer

    clf = appkit.load("text-classification", _mean_pooling_folder(tmp_path / "mean"), labels=["a", "b", "c"],
                      precision="float32")
    append_mean_pooling_layer(clf.model)
    batch = clf._collate(["good", "the best drug and really good", "hate it"])
    clf.model.eval()
    with torch.no_grad():
        states = clf._top_features(batch)
        assert [len(s) for s in states] == batch["attention_mask"].sum(1).tolist()   # padding dropped
        ours = clf._top().eval()(clf._head_collate([(s, 0) for s in states])["features"])
        torch.testing.assert_close(ours, clf.model(**batch).logits, atol=1e-5, rtol=1e-4)


def test_top_trains_the_last_layer_keeps_the_pooling_and_saves_a_plain_classifier(tmp_path):
    import torch
    from transformers import pipeline

    clf = appkit.load("text-classification", _mean_pooling_folder(tmp_path / "mean"))
    train = text_train_frame(48)
    layer_before = {k: v.clone() for k, v in clf.model.base_model.encoder.layer[1].state_dict().items()}
    run = clf.fine_tune(train, strategy="top", learning_rate=3e-3, epochs=8, eval_data=train.head(12),
                        output_dir=tmp_path / "r", progress=False)
    assert run.strategy == "top" and run.metrics["accuracy"] >= 0.9
    layers = clf.model.base_model.encoder.layer
    assert len(layers) == 3                       # the two pretrained layers and the mean-pooling one
    after = layers[1].state_dict()
    assert any(not torch.equal(layer_before[k], after[k]) for k in layer_before)   # the last pretrained layer trained
    assert not layers[0].attention.self.query.weight.eq(0).all()
    assert layers[2].attention.self.query.weight.eq(0).all()        # the pooling layer still averages
    out = clf.save(tmp_path / "saved")
    texts = ["good great product", "hate it terrible", "the best drug", "sad it is bad"]
    ours = [r["label"] for r in appkit.load("text-classification", out, precision="float32").predict(texts)]
    theirs = [r["label"] for r in pipeline("text-classification", model=str(out), device="cpu")(texts)]
    assert ours == theirs == [r["label"] for r in clf.predict(texts)]


def test_loading_a_folder_of_another_task_is_refused(folder, tmp_path):
    clf = appkit.load("text-classification", folder, labels=["a", "b"])
    out = clf.save(tmp_path / "m")
    meta = json.loads((out / "appkit.json").read_text())
    meta["task"] = "image-classification"
    (out / "appkit.json").write_text(json.dumps(meta))
    with pytest.raises(AppkitError, match="holds a image-classification model"):
        appkit.load("text-classification", out)


def test_zero_shot_mode_survives_save_and_load(folder, tmp_path):
    clf = appkit.load("text-classification", folder, labels=["neg", "pos"], label_descriptions={"pos": "good great"})
    out = clf.save(tmp_path / "z")
    again = appkit.load("text-classification", out)
    assert again.mode == "zero-shot" and again.label_descriptions == {"pos": "good great"}
    assert again.predict("good great") == clf.predict("good great")


def test_dataframe_predictions_and_top_k(folder):
    clf = appkit.load("text-classification", folder, labels=["a", "b", "c"])
    df = pd.DataFrame({"review": ["good", "bad"], "id": [1, 2]})
    out = clf.predict(df, column="review", top_k=1)
    assert {"pred_label", "pred_score"} <= set(out.columns) and "pred_label" not in df
    assert len(clf.predict("good", top_k=2)["scores"]) == 2


def _tiny_classifier_folder(path, arch: str, labels: list[str]) -> str:
    """A tiny random *ForSequenceClassification of another family, with its own labels, saved to a folder."""
    import torch
    from transformers import (BertTokenizerFast, DistilBertConfig, DistilBertForSequenceClassification,
                              RobertaConfig, RobertaForSequenceClassification)

    from ..conftest import WORDS

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    common = dict(id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    torch.manual_seed(0)
    if arch == "distilbert":
        cfg = DistilBertConfig(vocab_size=len(vocab), dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                               max_position_embeddings=64, **common)
        model = DistilBertForSequenceClassification(cfg)
    else:
        cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=70, pad_token_id=0, **common)
        model = RobertaForSequenceClassification(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_transformers_classifiers_load_with_their_labels_and_train_their_head(arch, tmp_path):
    folder = _tiny_classifier_folder(tmp_path / arch, arch, ["ham", "spam"])
    clf = appkit.load("text-classification", folder)
    assert clf.labels == ["ham", "spam"] and clf.mode == "trained"
    assert clf.predict("good product")["label"] in {"ham", "spam"}
    train = text_train_frame(24).assign(label=lambda d: d.label.map({"positive": "ham", "negative": "spam"}))
    run = clf.fine_tune(train, strategy="head", epochs=2, progress=False, output_dir=tmp_path / "r")
    assert run.history["train_loss"].notna().any()
    # new classes at load: the old head cannot answer them, so a new one is trained
    relabelled = appkit.load("text-classification", folder, labels=["a", "b", "c"])
    assert relabelled.mode == "zero-shot" and relabelled.model.config.num_labels == 3


def test_an_unreachable_hub_id_is_a_clear_error_not_a_traceback():
    with pytest.raises(AppkitError, match="Could not load 'no-such-org/no-such-model'.*offline, pick a catalogue model"):
        appkit.load("text-classification", "no-such-org/no-such-model")


def test_many_labels_keep_the_top_five_scores_unless_asked_and_evaluate_keeps_all(folder):
    """All 1000 ImageNet scores as a dict cost 213 KB per result (10,000 images: 2 GB): beyond 20 labels a result
    keeps the top 5 (as transformers' image pipeline); top_k asks for more; evaluate needs and keeps every score."""
    labels = [f"label{i}" for i in range(30)]
    clf = appkit.load("text-classification", folder, labels=labels)
    r = clf.predict("good product")
    assert len(r["scores"]) == 5 and r["label"] == next(iter(r["scores"]))
    assert len(clf.predict("good product", top_k=30)["scores"]) == 30
    report = clf.evaluate(pd.DataFrame({"text": ["good", "bad", "fine"], "label": ["label0", "label1", "label2"]}))
    assert all(len(s) == 30 for s in report.table["scores"])
    few = appkit.load("text-classification", folder, labels=labels[:3])
    assert len(few.predict("good product")["scores"]) == 3


# ---------------------------------------------------------------------- strategy "probe"
def test_probe_chooses_a_layer_by_cross_validation_and_saves_a_stock_model(folder, tmp_path):
    """The default on a CPU: a linear model on one layer's sentence vectors; the saved folder keeps the layers up to
    it and gives the pipeline the same labels and scores."""
    from transformers import pipeline

    from appkit.training import PROBE_C

    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    run = clf.fine_tune(text_train_frame(40), progress=False, output_dir=tmp_path / "run")
    assert run.strategy == "probe" and "auto: no GPU" in run.notes[0]
    assert any("cross-validation" in n for n in run.notes) and run.calibration["rows"] == 40
    # every candidate is a row of the history: 2 pretrained layers x the C grid x 2 class weightings ("auto")
    assert len(run.history) == 2 * len(PROBE_C) * 2 and run.history["step"].tolist() == list(range(1, len(run.history) + 1))
    assert run.metrics["accuracy"] > 0.9                           # cross-validated on the 40 rows (6 texts a class)
    layer = run.params["layer"]
    assert layer in (1, 2) and clf.model.config.num_hidden_layers == layer + 1 and clf.mode == "trained"
    texts = ["good great product", "the worst drug", "happy it is fine", "ugly really broken", "love it"]
    ours = clf.predict(texts)
    clf.save(tmp_path / "saved")
    theirs = pipeline("text-classification", model=str(tmp_path / "saved"), device="cpu", top_k=None)(texts)
    assert [r["label"] for r in ours] == [max(t, key=lambda s: s["score"])["label"] for t in theirs]
    # the scores to 1e-4 against appkit in float32: where the CPU has native bf16 appkit's default runs a bf16 copy
    # of the encoder, whose scores differ from float32 in the 4th decimal (seen: 1.2e-4 on an AVX512-BF16 CPU)
    exact = appkit.load("text-classification", str(tmp_path / "saved"), precision="float32").predict(texts)
    for r, t in zip(exact, theirs):
        assert {s["label"]: s["score"] for s in t} == pytest.approx(r["scores"], abs=1e-4)
    ax = run.plot()
    assert ax.get_xlabel().startswith("pretrained layer") and len(ax.lines) >= len(PROBE_C)
    # a second probe starts again from every pretrained layer (the first kept fewer)
    again = clf.fine_tune(text_train_frame(40), strategy="probe", seed=1, progress=False, output_dir=tmp_path / "r2")
    assert set(again.history["layer"]) == {1, 2}


def test_probe_resumes_from_its_features_on_disk(folder, tmp_path, monkeypatch):
    """Interrupted or not, a second run on the same data reads the features from disk and makes the same choice."""
    first = appkit.load("text-classification", folder, labels=["negative", "positive"])
    run = first.fine_tune(text_train_frame(40), progress=False, output_dir=tmp_path / "run")
    second = appkit.load("text-classification", folder, labels=["negative", "positive"])

    def never(*a, **k):
        raise AssertionError("features were computed again")

    monkeypatch.setattr(type(second), "_probe_features", never)
    resumed = second.fine_tune(text_train_frame(40), progress=False, output_dir=tmp_path / "run", resume=True)
    assert resumed.params == run.params
    texts = ["good great product", "the worst drug"]
    for a, b in zip(second.predict(texts), first.predict(texts)):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)


def test_auto_trains_in_epochs_when_epochs_are_set_and_tune_runs_the_probe_search(folder, tmp_path):
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    run = clf.fine_tune(text_train_frame(), epochs=2, progress=False, output_dir=tmp_path / "run")
    assert run.strategy == "head" and "you set epochs" in run.notes[0]
    layers = clf.model.config.num_hidden_layers
    search = clf.tune(text_train_frame(40), seed=0)
    assert search.strategy == "probe" and search.best_params == {} and search.extra["layer"] in (1, 2)
    assert "cross-validation chose" in search._repr_html_() and len(search.trials) > 4
    assert clf.model.config.num_hidden_layers == layers          # tuning never changes the model the user holds
    assert clf.fine_tune(text_train_frame(40), **search.best_params, progress=False,
                         output_dir=tmp_path / "r2").params == search.extra
    with pytest.raises(DataError, match="strategy 'probe' has no learning rate"):
        clf.tune(text_train_frame(40), strategy="probe", space={"learning_rate": ("log", 1e-3, 1e-2)})
    with pytest.warns(UserWarning, match="epochs does not apply"):
        clf.fine_tune(text_train_frame(40), strategy="probe", epochs=3, progress=False, output_dir=tmp_path / "r3")


def test_fit_logistic_matches_scikit_learn():
    """The probe's solver minimises scikit-learn's L2 logistic regression objective (same C, bias not penalised)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from appkit.training import fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=120) > 0).astype(int) + (x[:, 2] > 1)
    for c in (0.01, 1.0):
        ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y)
        theta = fit_logistic(torch.tensor(x), y, 3, c, max_iter=1000)
        ours = x @ theta[:-1].numpy() + theta[-1].numpy()
        theirs = ref.decision_function(x)
        # multinomial logits are defined up to a shift per row: compare centred
        assert ours - ours.mean(1, keepdims=True) == pytest.approx(theirs - theirs.mean(1, keepdims=True), abs=2e-3)
