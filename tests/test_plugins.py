"""Plugins: a user's own weighting or model in a file, trained, evaluated and reported
without touching dwrec (docs/extending.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dwrec
from dwrec.cli import main
from dwrec.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "inverse_sqrt_weighting.py"
TINY = ["--epochs", "1", "--hidden", "8", "--heads", "1", "--layers", "1", "--max-len", "8",
        "--batch-size", "64", "--threads", "1", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synthetic"
    code = main(["prepare", "synthetic", "--users", "150", "--items", "60", "--domains", "4",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_the_example_weighting_trains_evaluates_and_reports(synthetic, tmp_path, capsys):
    plugin = tmp_path / "inverse_sqrt_weighting.py"  # a copy: the test changes it below
    plugin.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    runs = []
    for loss in ("generic", "inverse-sqrt"):
        for seed in (0, 1):
            run = tmp_path / "runs" / f"{loss}-{seed}"
            argv = ["train", "--dataset", str(synthetic), "--loss", loss, "--seed", str(seed),
                    "--out", str(run), *TINY]  # fmt: skip
            if loss == "inverse-sqrt":
                argv += ["--plugin", str(plugin), "--set", "isqrt_max=8"]
            assert main(argv) == 0, capsys.readouterr().err
            assert main(["evaluate", str(run), "--threads", "1"]) == 0
            runs.append(run)

    config = json.loads((runs[-1] / "config.json").read_text())
    assert config["loss"]["loss"] == "inverse-sqrt" and config["loss"]["isqrt_max"] == 8.0
    import hashlib

    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert config["plugins"] == [{"path": str(plugin.resolve()), "sha256": digest}]
    assert "plugins" not in json.loads((runs[0] / "config.json").read_text())

    # weights proportional to f^-1/2, normalised so that sum_d f_d w_d = 1 (no cap reached):
    # f = domain shares of the positives the trainer's windows hold, counted here in numpy
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.train.batches import training_windows

    dataset = load_dataset(synthetic)
    targets = training_windows(dataset, make_split(dataset, "loo"), 8).target_items()
    counts = np.bincount(targets, minlength=dataset.n_items) @ dataset.item_domain_matrix
    shares = counts / counts.sum()
    done = json.loads((runs[-1] / "train_done.json").read_text())
    assert list(done["domain_weights"]) == dataset.domain_names
    weights = np.array(list(done["domain_weights"].values()))
    expected = shares**-0.5 / np.sum(shares * shares**-0.5)
    np.testing.assert_allclose(weights, expected, rtol=1e-3)

    capsys.readouterr()
    assert main(["report", *map(str, runs), "--format", "json", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["baseline"] == "sasrec+generic" and "sasrec+inverse-sqrt" in out

    plugin.write_text(plugin.read_text() + "\n# changed\n", encoding="utf-8")
    assert main(["evaluate", str(runs[-1]), "--threads", "1"]) == 2
    assert "has changed since the run was trained" in capsys.readouterr().err
    plugin.unlink()
    assert main(["report", *map(str, runs)]) == 2
    assert "which is missing" in capsys.readouterr().err


TOY_MODEL = """
from dataclasses import dataclass, field

import torch

from dwrec.models.registry import register
from dwrec.models.sasrec import SASRec
from dwrec.models.base import ModelConfig

CALLS = []


@dataclass
class ToyConfig(ModelConfig):
    toy_aux: float = field(default=0.0, metadata={"help": "Weight of the auxiliary loss"})


@register
class Toy(SASRec):
    name = "toy"
    config_class = ToyConfig
    supports_multiprocess = False

    def bind_dataset(self, dataset):
        CALLS.append(("bind", dataset.n_items))
        self.register_buffer("item_count", torch.tensor(float(dataset.n_items)))

    def auxiliary_loss(self, inputs, targets, hidden, generator):
        CALLS.append(("aux", tuple(inputs.shape)))
        return self.config.toy_aux * hidden.pow(2).mean()
"""


def test_a_toy_model_from_a_plugin_file_trains_with_its_own_option(synthetic, tmp_path):
    import sys

    plugin = tmp_path / "toy_model.py"
    plugin.write_text(TOY_MODEL, encoding="utf-8")
    options = dict(epochs=1, hidden=8, heads=1, layers=1, max_len=8, batch_size=64, quiet=True)
    result = dwrec.train(synthetic, model="toy", plugins=[plugin], out=tmp_path / "toy",
                         toy_aux=0.5, **options)  # fmt: skip
    module = next(m for name, m in sys.modules.items() if name.startswith("dwrec_plugin_toy"))
    assert module.CALLS[0] == ("bind", 60)  # bound before any step
    assert sum(call[0] == "aux" for call in module.CALLS) >= 2  # every step
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["model"]["name"] == "toy" and config["model"]["toy_aux"] == 0.5
    metrics = dwrec.evaluate(result.run_dir)  # the buffer made in bind_dataset loads back
    assert metrics["overall"]["ndcg@10"] >= 0.0

    # the auxiliary loss is part of the objective: another weight, other numbers
    other = dwrec.train(synthetic, model="toy", plugins=[plugin], out=tmp_path / "toy2",
                        toy_aux=0.0, **options)  # fmt: skip
    losses = [
        json.loads((run / "log.jsonl").read_text().splitlines()[0])["train_loss"]
        for run in (result.run_dir, other.run_dir)
    ]
    assert losses[0] != losses[1]

    with pytest.raises(UsageError, match="cannot train with several processes"):
        dwrec.train(synthetic, model="toy", plugins=[plugin], nproc=2, **options)
    with pytest.raises(UsageError, match="'toy_aux' is an option of --model toy, not of"):
        dwrec.train(synthetic, model="sasrec", toy_aux=1.0, **options)


def test_train_help_lists_every_option_of_every_class_with_its_default(capsys, monkeypatch):
    import dataclasses

    from dwrec.losses.config import loss_classes
    from dwrec.models.registry import model_class, model_names

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "<list" not in out
    # the built-in classes (a plugin another test loaded here came after the CLI was built)
    classes = [model_class(name) for name in model_names()] + loss_classes()
    classes = [cls.config_class for cls in classes if cls.__module__.startswith("dwrec.")]
    for config_class in classes:
        for f in dataclasses.fields(config_class):
            flag = f"--{f.name.replace('_', '-')}"
            assert flag in out, flag
    for shown in ("[0.9,0.6,0.3]", "[normalized]", "[0.25]", "[64; pinnerformer 256]"):
        assert shown in out, shown
    assert "bert4rec: Masking probability [0.2]" in out
    # an option two models share with different defaults shows each model's (it showed
    # only the first's: sparseennet's temperature read [0.1], its default being 1.0)
    text = " ".join(out.split())
    assert "[calrec 0.1, sparseennet 1]" in text


def test_set_reads_toml_values_and_names_an_unknown_key():
    from dwrec.train.config import parse_set, resolve

    values = parse_set(["w_max=5", "mml_margins=[0.9, 0.5]", "weight_scale=log", "amp=false"])
    assert values == {"w_max": 5, "mml_margins": [0.9, 0.5], "weight_scale": "log", "amp": False}
    with pytest.raises(UsageError, match="same length"):  # ranges are checked as for flags
        resolve({**values, "loss": "dynamic"})
    values.update(parse_set(["mml-weights=[1, 0.5]"]))
    config = resolve({**values, "loss": "dynamic"})
    assert config.loss.w_max == 5.0 and isinstance(config.loss.w_max, float)
    assert config.loss.mml_margins == [0.9, 0.5] and config.train.amp is False
    with pytest.raises(UsageError, match="unknown option 'w_maxx'. Did you mean: w_max"):
        parse_set(["w_maxx=5"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_set(["w_max"])
