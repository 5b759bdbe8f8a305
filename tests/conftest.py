"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get("DWREC_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).expanduser()
"""The real public datasets: ``../shared/data`` beside the repository, or ``$DWREC_TEST_DATA``."""

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets beside the repository (``../shared/data``)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


def shared_file(*parts: str) -> Path:
    """A file under ``../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the real-data test needs ../shared/data beside the repo")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The small synthetic dataset of ``aux_model_runs.SYNTHETIC``, prepared once per test
    module (a module may define its own ``data_dir`` instead)."""
    from aux_model_runs import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty $DWREC_HOME so nothing touches ~/.cache/dwrec."""
    home = tmp_path_factory.mktemp("dwrec_home")
    monkeypatch.setenv("DWREC_HOME", str(home))
    monkeypatch.setenv("DWREC_OFFLINE", os.environ.get("DWREC_OFFLINE", "1"))
    return home
