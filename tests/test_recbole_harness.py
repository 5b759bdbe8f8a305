"""RecBole harness plumbing (dwrec/baselines/recbole.py) that can be checked without RecBole:
the subprocess runs the venv's own python (not the interpreter its symlink points to), gets
the spec and thread count, speaks the session protocol, fails loudly, and the speed driver
only uses what the main driver defines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dwrec.baselines import recbole as harness
from dwrec.baselines.recbole_drivers import DRIVER, SPEED_DRIVER
from dwrec.data.export import RECBOLE_INTER_HEADER
from dwrec.errors import UsageError

# Stands in for the venv's python. driver.py: writes a result file describing the call.
# speed_driver.py: sends that description as its ready line, then answers each request.
FAKE_PYTHON = """#!/usr/bin/env python3
import json, os, sys
argv0, script, spec_path, result_path = sys.argv[:4]
called = {"argv0": argv0, "script": script, "spec": json.load(open(spec_path)),
          "threads_env": os.environ.get("OMP_NUM_THREADS"),
          "scripts_present": sorted(p for p in os.listdir(".") if p.endswith(".py"))}
if script == "driver.py":
    json.dump(called, open(result_path, "w"))
    sys.exit(0)
print(json.dumps(called), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request.get("op") == "die":
        sys.exit(4)
    answer = {"error": "unknown"} if request.get("op") == "bad" else {"echo": request}
    print(json.dumps(answer), flush=True)
"""


def fake_venv(tmp_path: Path) -> Path:
    """A venv folder whose bin/python is a symlink to a script elsewhere, as in a real venv
    (bin/python -> the base interpreter); resolving the link would leave the venv."""
    real = tmp_path / "elsewhere" / "interpreter"
    real.parent.mkdir()
    real.write_text(FAKE_PYTHON)
    real.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(real)
    return venv


def atomic_dir(tmp_path: Path, name: str = "toy") -> Path:
    folder = tmp_path / "atomic" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.inter").write_text(RECBOLE_INTER_HEADER + "\n0\t0\t0\n")
    return folder


def test_session_uses_the_venv_python_and_answers_requests(tmp_path):
    venv = fake_venv(tmp_path)
    with harness.RecBoleSession(
        atomic_dir(tmp_path), "toy", {"seed": 3}, threads=2, venv_path=venv
    ) as session:
        info = session.info
        answer = session.call({"op": "train", "batches": 5})
        with pytest.raises(harness.RecBoleError, match="RecBole driver: unknown"):
            session.call({"op": "bad"})
        scratch = Path(session._scratch.name)
        assert scratch.exists()
    assert not scratch.exists()  # closed: scratch folder removed
    assert answer == {"echo": {"op": "train", "batches": 5}}
    assert info["argv0"] == str((venv / "bin" / "python").absolute())
    assert info["script"] == "speed_driver.py"
    assert info["spec"]["threads"] == 2 and info["threads_env"] == "2"
    assert info["spec"]["config"]["seed"] == 3
    assert info["spec"]["config"]["data_path"] == str((tmp_path / "atomic").resolve())
    assert info["scripts_present"] == ["driver.py", "speed_driver.py"]


def test_a_session_whose_process_dies_is_a_recbole_error(tmp_path):
    session = harness.RecBoleSession(
        atomic_dir(tmp_path), "toy", {}, threads=1, venv_path=fake_venv(tmp_path)
    )
    with pytest.raises(harness.RecBoleError, match="exit code 4"):
        session.call({"op": "die"})


def test_training_run_uses_the_main_driver(tmp_path):
    venv = fake_venv(tmp_path)
    result = harness.run_recbole(atomic_dir(tmp_path), "toy", {}, threads=1, venv_path=venv)
    assert result["script"] == "driver.py"
    assert result["argv0"] == str((venv / "bin" / "python").absolute())


def test_bad_arguments_are_usage_errors(tmp_path):
    venv = fake_venv(tmp_path)
    folder = atomic_dir(tmp_path)
    with pytest.raises(UsageError, match="expected other.inter"):
        harness.RecBoleSession(folder, "other", {}, threads=1, venv_path=venv)
    with pytest.raises(UsageError, match="--threads"):
        harness.run_recbole(folder, "toy", {}, threads=0, venv_path=venv)
    with pytest.raises(harness.RecBoleError, match="no RecBole venv"):
        harness.RecBoleSession(folder, "toy", {}, threads=1, venv_path=tmp_path / "none")


def test_a_failed_run_is_a_recbole_error(tmp_path):
    venv = fake_venv(tmp_path)
    (tmp_path / "elsewhere" / "interpreter").write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(harness.RecBoleError, match="exit code 3"):
        harness.run_recbole(atomic_dir(tmp_path), "toy", {}, threads=1, venv_path=venv)


def test_speed_driver_imports_only_what_the_main_driver_defines():
    defined = {
        node.name
        for node in ast.parse(DRIVER).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    imported = [
        alias.name
        for node in ast.parse(SPEED_DRIVER).body
        if isinstance(node, ast.ImportFrom) and node.module == "driver"
        for alias in node.names
    ]
    assert imported and set(imported) <= defined


def test_every_request_the_session_documents_is_handled_by_the_driver():
    handled = set(re.findall(r'op == "(\w+)"', SPEED_DRIVER))
    documented = set(re.findall(r'``\{"op": "(\w+)"', harness.RecBoleSession.__doc__))
    assert documented == {"train", "eval", "rss"}
    assert handled == documented
