"""Splits against a per-user loop written from METHODS.md section 8."""

from __future__ import annotations

import pytest

import dwrec
from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.errors import UsageError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "d"
    dwrec.prepare(
        "synthetic", out=out, options={"users": 80, "items": 60, "domains": 4, "mean_length": 6}
    )
    return load_dataset(out)


def _expected(dataset, scheme):
    train_end, valid, test = [], [], []
    for user in range(dataset.n_users):
        start, end = int(dataset.user_indptr[user]), int(dataset.user_indptr[user + 1])
        n = end - start
        if n < 3:
            n_valid = n_test = 0
        elif scheme == "loo":
            n_valid = n_test = 1
        else:
            n_test, n_valid = max(1, round(0.2 * n)), max(1, round(0.1 * n))
        train_end.append(end - n_test - n_valid)
        valid += [(user, row) for row in range(end - n_test - n_valid, end - n_test)]
        test += [(user, row) for row in range(end - n_test, end)]
    return train_end, valid, test


@pytest.mark.parametrize("scheme", ["loo", "ratio"])
def test_split_matches_a_per_user_loop(dataset, scheme):
    split = make_split(dataset, scheme)
    train_end, valid, test = _expected(dataset, scheme)
    assert split.train_end.tolist() == train_end
    for cases, expected in ((split.valid, valid), (split.test, test)):
        assert list(zip(cases.user.tolist(), cases.row.tolist(), strict=True)) == expected
        assert cases.history_end.tolist() == cases.row.tolist()
        assert cases.target.tolist() == dataset.item_ids[cases.row].tolist()


def test_ratio_keeps_about_70_10_20(dataset):
    split = make_split(dataset, "ratio")
    total = len(dataset.item_ids)
    assert 0.1 < len(split.test) / total < 0.3
    assert len(split.valid) < len(split.test)


def test_fingerprint_is_stable_and_depends_on_the_scheme(dataset):
    assert make_split(dataset, "loo").fingerprint == make_split(dataset, "loo").fingerprint
    assert make_split(dataset, "loo").fingerprint != make_split(dataset, "ratio").fingerprint


def test_unknown_scheme_names_the_flag(dataset):
    with pytest.raises(UsageError, match="--split"):
        make_split(dataset, "random")
