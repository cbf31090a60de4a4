"""The declared task contract (appkit/tasks/base.py): a class that breaks it fails when it is defined, options
reach only the steps that take them, and the engine keeps its own feature cache."""
from __future__ import annotations

import pytest

from appkit.tasks.base import ClassificationTask, Metric, Task, TextTargetTask, TrainingDefaults
from appkit.training import feature_cache

DEFAULTS = TrainingDefaults(epochs={"full": 1}, learning_rate={"full": 1e-3}, batch_size={"full": 4},
                            best_metric="eval_loss")


def _hooks(**extra):
    """Every hook of a plain Task, as a class namespace, minus what ``extra`` removes (value None) or adds."""
    ns = {
        "strategies": ("full",), "training": DEFAULTS, "result_keys": ("answer",),
        "_load": classmethod(lambda cls, source, *, labels, meta, device: None),
        "_preprocess": lambda self, item, *, where: item, "_collate": lambda self, units: units,
        "_forward": lambda self, batch: batch, "_postprocess": lambda self, raw, units: [{"answer": r} for r in raw],
        "_prepare_targets": lambda self, a, b: (a, b), "_train_collate": lambda self, u, t, train: u,
        "_step_loss": lambda self, model, inputs, weights: (0, {}), "_eval_table": lambda self, df, results: df,
        "_metrics": lambda self, table, summary=False: {}, "_worst": lambda self, table, n: table,
        "_worst_html": lambda self, worst: "",
    }
    ns.update(extra)
    return {k: v for k, v in ns.items() if v is not None}


def test_a_complete_direct_subclass_of_task_is_accepted():
    cls = type("Complete", (Task,), _hooks())
    assert cls.training.epochs == {"full": 1}


@pytest.mark.parametrize("hook", ["_forward", "_postprocess", "_step_loss", "_train_collate", "_metrics", "_load"])
def test_a_missing_hook_fails_when_the_class_is_defined(hook):
    with pytest.raises(TypeError, match=f"does not implement {hook}"):
        type("Missing", (Task,), _hooks(**{hook: None}))


def test_missing_or_partial_training_defaults_fail_at_definition():
    with pytest.raises(TypeError, match="training = TrainingDefaults"):
        type("NoDefaults", (Task,), _hooks(training=None))
    with pytest.raises(TypeError, match="training.epochs has no value for strategy 'head'"):
        type("Partial", (Task,), _hooks(strategies=("full", "head")))


def test_strategy_head_needs_the_head_hooks():
    with pytest.raises(TypeError, match="TrainsHead"):
        type("NoHead", (Task,), _hooks(strategies=("head", "full"),
                                       training=TrainingDefaults(epochs={"head": 1, "full": 1}, learning_rate={"head": 1, "full": 1},
                                                                 batch_size={"head": 1, "full": 1}, best_metric="eval_loss")))


def test_options_must_name_real_steps_and_results_their_keys():
    with pytest.raises(TypeError, match="routed to"):
        type("BadRoute", (Task,), _hooks(predict_options={"beam": ("decode",)}))
    with pytest.raises(TypeError, match="result_keys"):
        type("NoKeys", (Task,), _hooks(result_keys=()))


def test_family_bases_declare_what_they_add():
    with pytest.raises(TypeError, match="_final_linear"):
        type("Clf", (ClassificationTask,), _hooks(strategies=("full",), _features=lambda s, b: b, _head=lambda s: None))
    with pytest.raises(TypeError, match="_label_ids"):
        type("Seq", (TextTargetTask,), _hooks())
    assert isinstance(ClassificationTask.metric_info["accuracy"], Metric) and ClassificationTask.metric_info["accuracy"].percent


def test_each_hook_gets_only_the_options_routed_to_it():
    from appkit.registry import get_task_class

    speech = get_task_class("speech-recognition")
    routed = speech._route_options(object.__new__(speech), {"chunking": "fixed", "pack": False, "num_beams": 2})
    assert routed["preprocess"] == {"chunking": "fixed"} and routed["merge"] == {"chunking": "fixed"}
    assert routed["batches"] == {"pack": False}
    assert routed["forward"] == {"num_beams": 2} and routed["postprocess"] == {"num_beams": 2}


def test_no_hook_swallows_options():
    """``**_`` in a hook hid options it did not know; routing makes every hook's keywords explicit."""
    import inspect

    from appkit.registry import get_task_class, list_tasks

    for name in list_tasks():
        cls = get_task_class(name)
        for hook in ("_preprocess", "_batches", "_forward", "_postprocess", "_merge"):
            params = inspect.signature(getattr(cls, hook)).parameters.values()
            assert not any(p.kind is p.VAR_KEYWORD for p in params), f"{cls.__name__}.{hook} takes **kwargs"


def test_the_engine_keeps_the_feature_cache(tiny_text_case, tmp_path):
    task = tiny_text_case.task
    assert "_feature_cache" not in vars(task)
    task.fine_tune(tiny_text_case.train, epochs=1, strategy="head", output_dir=tmp_path / "run", progress=False)
    assert len(feature_cache(task)) == 1
    assert "_feature_cache" not in vars(task)
