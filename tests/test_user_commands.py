"""The commands of the README and the paper-reproduction issue, run verbatim as a user types
them, in a fresh working folder with raw files placed by hand in the cache.

Each runs the installed ``dwrec`` console script in a subprocess (so argument parsing, the
defaults and the exit codes are the real ones). ``--device cuda`` runs wherever CUDA is at
hand; everywhere else the same line runs with ``--device cpu`` swapped in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_file

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _dwrec() -> list[str]:
    script = Path(sys.executable).with_name("dwrec")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dwrec.cli import main; sys.exit(main())"]


def dwrec(line: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """Run ``dwrec ...`` (``line`` without the leading ``dwrec``) offline, as a user would."""
    env = dict(os.environ, DWREC_HOME=str(home), DWREC_OFFLINE="1", OMP_NUM_THREADS="1",
               COLUMNS="120")  # fmt: skip
    result = subprocess.run(_dwrec() + line.split(), cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def place_raw(home: Path, name: str, folder: str) -> None:
    """Copy the real raw files into ``$DWREC_HOME/raw/NAME`` (as a user on an offline machine)."""
    shutil.copytree(shared_file(folder), home / "raw" / name)


def test_prepare_lastfm_reads_the_cache_and_never_downloads(tmp_path, _isolated_home):
    place_raw(_isolated_home, "lastfm", "hetrec2011-lastfm-2k")
    result = dwrec("prepare lastfm", tmp_path, _isolated_home)
    assert result.returncode == 0, result.stderr
    meta = json.loads((_isolated_home / "datasets" / "lastfm" / "dataset.json").read_text())
    assert meta["counts"]["interactions"] == 66_825  # the documented default 5-core
    assert meta["counts"]["users"] == 1_152
    assert all(str(_isolated_home / "raw" / "lastfm") in s["path"] for s in meta["sources"])


def test_prepare_lastfm_offline_without_files_names_the_cache_and_source(tmp_path, _isolated_home):
    result = dwrec("prepare lastfm", tmp_path, _isolated_home)
    assert result.returncode == 1
    message = result.stderr + result.stdout
    assert "--source" in message and "raw" in message


@pytest.mark.parametrize("device", DEVICES)
def test_readme_pipeline_verbatim(tmp_path, _isolated_home, device):
    """prepare -> ``train --loss generic/dynamic --device cuda`` -> ``evaluate`` ->
    ``report --domains Film-Noir Horror`` in a fresh folder, no further flags.

    The dataset is MovieLens-100K restricted to its heaviest users (prepared with a flag
    beforehand, so that training with every default ends in seconds); the train, evaluate
    and report lines are exactly the README's."""
    place_raw(_isolated_home, "movielens-100k", "ml-100k")
    prepared = dwrec("prepare movielens-100k --min-user-interactions 300", tmp_path,
                     _isolated_home)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr

    for loss in ("generic", "dynamic"):
        result = dwrec(f"train --loss {loss} --device {device}", tmp_path, _isolated_home)
        assert result.returncode == 0, result.stderr
        first_line = result.stdout.strip().splitlines()[0]
        assert first_line.startswith("dataset: movielens-100k"), first_line
        run_dir = tmp_path / "runs" / f"movielens-100k-sasrec-{loss}-s0"
        assert (run_dir / "train_done.json").exists()
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model"]["name"] == "sasrec"
        assert config["model"]["max_len"] == 200 and config["train"]["device"] == device

    evaluated = dwrec("evaluate", tmp_path, _isolated_home)
    assert evaluated.returncode == 0, evaluated.stderr
    for loss in ("generic", "dynamic"):
        assert (tmp_path / "runs" / f"movielens-100k-sasrec-{loss}-s0" / "metrics.json").exists()
    again = dwrec("evaluate", tmp_path, _isolated_home)
    assert again.returncode == 0 and "nothing to evaluate" in again.stdout

    reported = dwrec("report --domains Film-Noir Horror", tmp_path, _isolated_home)
    assert reported.returncode == 0, reported.stderr
    out = reported.stdout
    assert "sasrec+generic (baseline)" in out and "sasrec+dynamic" in out
    # markdown rows start with "|"; the console's compact tables with the domain's name
    table_rows = [line for line in out.splitlines()
                  if line.startswith(("|", "│", "Film-Noir ", "Horror "))]  # fmt: skip
    assert any("Film-Noir" in row for row in table_rows)
    assert any("Horror" in row for row in table_rows)

    # A second identical train line never overwrites the first run.
    rerun = dwrec(f"train --loss dynamic --device {device} --epochs 1", tmp_path, _isolated_home)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "runs" / "movielens-100k-sasrec-dynamic-s0-2" / "config.json").exists()
