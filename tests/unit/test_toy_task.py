"""A new task in one file: a toy rating task (text -> a number from 0 to 1) defined here alone, straight on
``Task``. Registered, it appears in list_tasks() and list_models(), loads by catalogue name, and passes the
same contract suite as appkit's own tasks (tests/test_contract.py: CONTRACT), touching no other file."""
from __future__ import annotations

from typing import ClassVar

import pandas as pd
import pytest

import appkit
from appkit.errors import DataError, _msg
from appkit.registry import ModelEntry, register_task
from appkit.tasks.base import Metric, Task, TrainingDefaults

from ..conftest import TinyCase, make_tiny_bert_folder
from ..test_contract import CONTRACT

TOY = "toy-rating"


class ToyRating(Task):
    """Rates a text from 0 to 1 with a one-output BERT head (a plain transformers folder when saved)."""
    catalogue: ClassVar[tuple[ModelEntry, ...]] = (
        ModelEntry("toy-bert-rater", TOY, "hub:example/toy-bert-rater", "MIT", "30k params",
                   "a toy rater for the contract test (never downloaded)", hub_id="example/toy-bert-rater"),)
    input_column = "text"
    target_column = "rating"
    strategies: ClassVar[tuple[str, ...]] = ("full",)
    training: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs={"full": 2}, learning_rate={"full": 1e-3}, batch_size={"full": 8}, best_metric="eval_loss")
    predict_options: ClassVar[dict] = {"digits": ("postprocess",)}
    result_keys: ClassVar[tuple[str, ...]] = ("rating",)
    frame_keys: ClassVar[tuple[str, ...]] = ("rating",)
    metric_info: ClassVar[dict] = {"mae": Metric("mean absolute error of the rating (lower is better)")}

    # -- predicting
    @classmethod
    def _load(cls, source, *, labels, meta, device):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        return cls(model, AutoTokenizer.from_pretrained(source), labels=None, meta={**meta, "source": str(source)},
                   device=device, precision="float32")

    def _preprocess(self, item, *, where: str):
        from appkit.data import check_text_item

        return check_text_item(item, where=where)

    def _collate(self, units):
        return self.processor(units, padding=True, return_tensors="pt")

    def _forward(self, batch):
        return self.model(**batch).logits[:, 0].float().sigmoid()   # the rating users read stays float32

    def _postprocess(self, raw, units, *, digits: int | None = None):
        return [{"rating": round(float(v), digits) if digits else float(v)} for v in raw]

    # -- training
    def _prepare_targets(self, train_df, eval_df):
        def ratings(df, where):
            values = pd.to_numeric(df[self.target_column], errors="coerce")
            if values.isna().any() or not values.between(0, 1).all():
                raise DataError(_msg(f"The {where} has ratings outside 0-1", fix="scale them to 0-1"))
            return values.tolist()

        return ratings(train_df, "training data"), ratings(eval_df, "evaluation data") if eval_df is not None else None

    def _train_collate(self, units, targets, train: bool):
        import torch

        return {**self._collate(units), "labels": torch.tensor(targets, dtype=torch.float32)}

    def _step_loss(self, model, inputs: dict, weights):
        import torch.nn.functional as F

        target = inputs.pop("labels")
        out = model(**inputs)
        return F.mse_loss(out["logits"][:, 0].sigmoid(), target), out

    # -- evaluating
    def _eval_table(self, df, results):
        table = pd.DataFrame({"input": df[self.input_column].values, "reference": df[self.target_column].astype(float),
                              "prediction": [r["rating"] for r in results]})
        return table.assign(error=(table.reference - table.prediction).abs())

    def _metrics(self, table, summary: bool = False) -> dict:
        return {"mae": float(table["error"].mean())}

    def _worst(self, table, n: int):
        return table.sort_values("error", ascending=False).head(n)

    def _worst_html(self, worst) -> str:
        from appkit.report import table_html

        return table_html(worst)


def _toy_case(tmp_path) -> TinyCase:
    task = appkit.load(TOY, make_tiny_bert_folder(tmp_path / "tiny-bert", init=0.5))
    texts = ["good great product", "awful and bad", "it is fine", "the worst drug", "love it", "really poor"]
    train = pd.DataFrame({"text": texts * 3, "rating": [1.0, 0.0, 0.6, 0.0, 0.9, 0.1] * 3})
    return TinyCase(task=task, train=train, inputs=texts[:3], bad_input="   ", bad_match="empty text",
                    metric_keys={"mae"}, input_column="text")


@pytest.fixture
def toy():
    """ToyRating registered for one test, then taken out again: other tests see appkit's own tasks only."""
    from appkit import registry

    register_task(TOY)(ToyRating)
    yield ToyRating
    registry._TASKS.pop(TOY, None)


def test_the_toy_task_is_listed_with_its_models(toy):
    assert TOY in appkit.list_tasks()
    rows = appkit.list_models(TOY)
    assert list(rows["name"]) == ["toy-bert-rater"] and not rows["offline"].iloc[0]
    assert "toy-bert-rater" in set(appkit.list_models()["name"])


def test_the_toy_task_is_gone_when_unregistered():
    assert TOY not in appkit.list_tasks()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__.removeprefix("test_"))
def test_the_toy_task_passes_the_contract_suite(toy, check, tmp_path):
    check(_toy_case(tmp_path), tmp_path)


def test_the_toy_task_routes_its_own_option(toy, tmp_path):
    case = _toy_case(tmp_path)
    assert case.task.predict("good", digits=2)["rating"] == round(case.task.predict("good")["rating"], 2)
    with pytest.raises(appkit.AppkitError, match="Did you mean 'digits'"):
        case.task.predict("good", digit=2)
