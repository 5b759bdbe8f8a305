"""The CLI skeleton: version, help, errors as one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dwrec import __version__
from dwrec.cli import main
from dwrec.errors import UsageError
from dwrec.eval.evaluator import resolve_device as evaluator_device


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_dataset_suggests_close_names(capsys):
    assert main(["prepare", "synthetik"]) == 2
    err = capsys.readouterr().err
    assert "synthetic" in err and "Traceback" not in err


def test_prepare_synthetic_prints_the_domain_table(tmp_path, capsys):
    code = main(
        [
            "prepare",
            "synthetic",
            "--out",
            str(tmp_path / "s"),
            "--users",
            "40",
            "--items",
            "50",
            "--domains",
            "4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "interactions" in out and "D04" in out


def test_synthetic_flags_are_refused_for_real_datasets(tmp_path, capsys):
    assert main(["prepare", "movielens-1m", "--users", "5", "--source", str(tmp_path)]) == 2
    assert "--users" in capsys.readouterr().err


def test_datasets_lists_known_sources(capsys):
    assert main(["datasets"]) == 0
    assert "synthetic" in capsys.readouterr().out


def test_usage_errors_print_usage_not_a_traceback(capsys):
    assert main(["train", "an-unexpected-positional"]) == 2
    err = capsys.readouterr().err
    assert "unexpected extra argument" in err and "Traceback" not in err


def test_misspelt_flag_suggests_the_right_one(capsys):
    assert main(["train", "--hiddne", "3"]) == 2
    assert "--hidden" in capsys.readouterr().err


def test_help_shows_bracketed_defaults_instead_of_eating_them(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "[sasrec]" in out and "[loo]" in out


def test_prepare_help_gives_the_generators_real_defaults(capsys, monkeypatch):
    from dwrec.data.sources.synthetic import DEFAULTS

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["prepare", "--help"]) == 0
    out = capsys.readouterr().out
    assert f"number of users [{DEFAULTS['users']}]" in out
    assert f"mean sequence length [{DEFAULTS['mean_length']}]" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_evaluate_on_cuda_without_cuda_names_the_flag():
    with pytest.raises(UsageError, match="--device cuda.*--device cpu"):
        evaluator_device("cuda")


@pytest.mark.parametrize(
    "given, expected",
    [({}, "1000"), ({"GOMP_SPINCOUNT": "50"}, "50"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "unset")],
)
def test_cli_caps_openmp_spin_waits_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(given)
    code = "import os, dwrec.cli, torch; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
