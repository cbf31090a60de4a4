"""Decision tables computed by hand on a small report."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
import pytest

from appkit import decisions
from appkit.errors import DataError, UnknownNameError


def _report(refs, p_spam):
    scores = [{"spam": p, "ham": 1 - p} for p in p_spam]
    pred = ["spam" if p >= 0.5 else "ham" for p in p_spam]
    table = pd.DataFrame({"reference": refs, "prediction": pred, "score": [max(p, 1 - p) for p in p_spam],
                          "scores": scores})
    table["correct"] = table.reference == table.prediction
    return SimpleNamespace(table=table)


# 4 spam, 4 ham; spam probabilities overlap between 0.3 and 0.6
REPORT = _report(["spam"] * 4 + ["ham"] * 4, [0.9, 0.7, 0.45, 0.3, 0.6, 0.35, 0.1, 0.05])


def test_cost_minimising_threshold_moves_down_when_a_miss_is_expensive():
    cheap_miss = decisions.costs_by_threshold(REPORT, positive="spam", cost_fn=1, cost_fp=10)
    dear_miss = decisions.costs_by_threshold(REPORT, positive="spam", cost_fn=10, cost_fp=1)
    assert dear_miss.best["threshold"] < cheap_miss.best["threshold"]
    # at t=0.30 all 4 spam are caught, false alarms: 0.6 and 0.35 -> cost 2
    assert dear_miss.best["cost"] == 2 and dear_miss.best["fn"] == 0 and dear_miss.best["fp"] == 2
    # false alarms cost 10: flag only above 0.6 -> misses 0.45, 0.3 -> cost 2
    assert cheap_miss.best["cost"] == 2 and cheap_miss.best["fp"] == 0
    row = dear_miss.table.set_index("threshold").loc[0.5]
    assert (row.tp, row.fp, row.fn, row.tn) == (2, 1, 2, 3)
    assert "no model at all" in dear_miss.summary and "$40" in dear_miss.summary


def test_alert_budget_caps_alerts_per_day():
    d = decisions.alert_budget(REPORT, positive="spam", events_per_day=800, budgets=[100, 300, 800])
    rows = d.table.set_index("alerts_budget")
    assert (rows.alerts_per_day <= rows.index.to_series()).all()
    assert rows.loc[100, "share_caught"] == 0.25          # one alert in eight = the 0.9 spam
    assert rows.loc[300, "share_caught"] == 0.5          # 0.9, 0.7 and the 0.6 ham
    assert rows.loc[800, "share_caught"] == 1.0
    assert rows.share_caught.is_monotonic_increasing
    assert "800 alerts a day" in d.summary


def test_refer_below_reports_the_share_referred_and_the_accuracy_left():
    d = decisions.refer_below(REPORT, min_confidence=0.62)
    # confidences: .9 .7 .55 .7 .6 .65 .9 .95 -> below 0.62: .55 (spam 0.45, wrong) and .6 (ham 0.6, wrong)
    assert d.best["share_referred"] == pytest.approx(2 / 8)
    assert d.best["accuracy_decided"] == pytest.approx(5 / 6)
    assert d.best["errors_decided"] == 1
    assert "25%" in d.summary


def test_decision_errors():
    with pytest.raises(UnknownNameError, match=re.escape("Did you mean 'spam'")):
        decisions.costs_by_threshold(REPORT, positive="spma", cost_fn=1, cost_fp=1)
    with pytest.raises(DataError, match="classification report"):
        decisions.refer_below(SimpleNamespace(table=pd.DataFrame({"reference": ["a"]})), min_confidence=0.5)
    with pytest.raises(DataError, match="positive"):
        decisions.alert_budget(REPORT, positive="spam", events_per_day=10, budgets=[0])


def test_plot_marks_the_chosen_threshold():
    import matplotlib

    matplotlib.use("Agg")
    ax = decisions.costs_by_threshold(REPORT, positive="spam", cost_fn=5, cost_fp=1).plot()
    assert "chosen" in ax.get_legend().get_texts()[0].get_text()
    assert "<b>" in decisions.refer_below(REPORT, min_confidence=0.6)._repr_html_()
