"""Every report table names how dwrec's version of a shown model departs from the original."""

from __future__ import annotations

from types import SimpleNamespace

from dwrec.models.registry import model_class, model_names
from dwrec.report import _deviation_notes


def group(tmp_path, model: str, label: str):
    run = SimpleNamespace(path=tmp_path / label, config={"model": {"name": model}, "loss": {}})
    return SimpleNamespace(label=label, runs=[run], seeds=[0])


def test_the_three_competitors_and_only_they_declare_a_deviation():
    declared = {name for name in model_names() if model_class(name).deviation}
    assert declared == {"sigma", "calrec", "sparseennet"}
    assert "LLM" in model_class("calrec").deviation
    assert "kernel" in model_class("sigma").deviation


def test_a_note_per_deviating_model_shown_once_unknown_models_ignored(tmp_path):
    groups = [
        group(tmp_path, "sasrec", "sasrec+generic"),
        group(tmp_path, "sigma", "sigma+generic"),
        group(tmp_path, "sigma", "sigma+dynamic"),
        group(tmp_path, "a-plugin-model-not-loaded", "plugin+generic"),
    ]
    notes = _deviation_notes(groups)
    assert notes == [
        f"Model sigma: dwrec's version deviates from the original: "
        f"{model_class('sigma').deviation}."
    ]
    assert _deviation_notes(groups[:1]) == []
