"""`dwrec prepare` never loses work: no silent replacement, umask-respecting outputs, an
up-to-date copy reused offline, cut raw files refused, helpful dataset names, tie report."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

from dwrec.cli import main
from dwrec.data import download as dl
from dwrec.data import sources as registry
from dwrec.data.dataset import load_dataset
from dwrec.data.prepare import prepare
from dwrec.data.sources import RemoteFile, SourceSpec, all_sources
from dwrec.data.sources._parsing import read_delimited
from dwrec.errors import DataFormatError, UsageError
from dwrec.io import atomic_dir, write_json, write_parquet
from dwrec.paths import datasets_dir, resolve_dataset
from tests.conftest import SHARED_DATA

U_DATA = "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n2\t30\t2\t881250952\n"


def _ml100k(folder: Path, ratings: str = U_DATA) -> Path:
    """A u.data file (the --source; u.item and u.genre are optional beside a single file)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(ratings)
    return folder / "u.data"


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- issue 17.3


def test_prepare_refuses_to_replace_a_dataset_prepared_differently(tmp_path, capsys):
    source, out = _ml100k(tmp_path / "raw"), tmp_path / "data"
    assert main(["prepare", "movielens-100k", "--source", str(source), "--out", str(out)]) == 0
    before = _snapshot(out)
    fingerprint = json.loads(before["dataset.json"])["fingerprint"]
    argv = ["prepare", "movielens-100k", "--source", str(source), "--out", str(out)]
    status, _, err = _run(capsys, [*argv, "--min-rating", "4"])
    assert status == 2 and len(err.splitlines()) == 1, err
    for needle in (str(out), fingerprint, "min-rating None -> 4.0", "--name NAME", "--force"):
        assert needle in err, err
    assert _snapshot(out) == before  # nothing lost
    assert _leftovers(tmp_path) == []  # nothing left behind
    # The way out the message gives: a second name keeps both ...
    status, _, _ = _run(capsys, [*argv[:4], "--min-rating", "4", "--name", "ml-100k-r4"])
    assert status == 0
    assert load_dataset(datasets_dir() / "ml-100k-r4").meta["name"] == "ml-100k-r4"
    assert load_dataset(datasets_dir() / "ml-100k-r4").meta["counts"]["interactions"] == 2
    assert _snapshot(out) == before
    # ... and --force replaces it.
    assert _run(capsys, [*argv, "--min-rating", "4", "--force"])[0] == 0
    assert load_dataset(out).meta["counts"]["interactions"] == 2


def test_changed_raw_files_are_refused_too(tmp_path):
    source, out = _ml100k(tmp_path / "raw"), tmp_path / "data"
    prepare("movielens-100k", source=source, out=out)
    before = _snapshot(out)
    source.write_text(U_DATA + "3\t30\t5\t881250953\n")
    with pytest.raises(UsageError, match=r"other raw files \(sha256 differ\)"):
        prepare("movielens-100k", source=source, out=out)
    assert _snapshot(out) == before


def test_same_files_and_flags_are_not_refused_and_keep_the_fingerprint(tmp_path):
    """A copy prepared before the tie report (no held_out_ties) is rebuilt, same content."""
    source, out = _ml100k(tmp_path / "raw"), tmp_path / "data"
    first = prepare("movielens-100k", source=source, out=out)
    meta = json.loads((out / "dataset.json").read_text())
    del meta["held_out_ties"]
    (out / "dataset.json").write_text(json.dumps(meta))
    parquet = (out / "interactions.parquet").read_bytes()
    again = prepare("movielens-100k", source=source, out=out)
    assert not again.skipped
    assert again.meta["fingerprint"] == first.meta["fingerprint"]
    assert (out / "interactions.parquet").read_bytes() == parquet
    assert prepare("movielens-100k", source=source, out=out).skipped


def _amazon(folder: Path, category: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"reviewerID": f"U{u}", "asin": f"B{i}", "overall": 5.0, "unixReviewTime": 100 + i}
        for u in range(5)
        for i in range(5)
    ]
    path = folder / f"{category}_5.json.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_two_amazon_categories_prepare_into_two_datasets(tmp_path):
    fashion = prepare("amazon", source=_amazon(tmp_path / "f", "AMAZON_FASHION"))
    beauty = prepare("amazon", source=_amazon(tmp_path / "b", "All_Beauty"))
    assert (fashion.path.name, beauty.path.name) == ("amazon-fashion", "amazon-all-beauty")
    assert fashion.meta["name"] == "amazon-fashion"
    assert load_dataset(fashion.path).meta["fingerprint"] == fashion.meta["fingerprint"]
    assert sorted(p.name for p in datasets_dir().iterdir()) == [
        "amazon-all-beauty",
        "amazon-fashion",
    ]


def test_bad_dataset_name_is_refused(tmp_path):
    with pytest.raises(UsageError, match="--name 'a/b': a dataset name is one folder name"):
        prepare("movielens-100k", source=_ml100k(tmp_path / "raw"), dataset_name="a/b")


# --------------------------------------------------------------------------- issue 17.7


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)]
)
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})

        write_parquet(tmp_path / "t.parquet", pa.table({"x": [1]}))
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "inside.txt").write_text("x")
        result = prepare("synthetic", out=tmp_path / "ds", options={"users": 30, "items": 60})
        archive = tmp_path / "own.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("data/u.data", U_DATA)
        extracted = dl.extract_archive(archive, tmp_path / "raw")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "t.parquet", *result.path.iterdir()):
        assert path.stat().st_mode & 0o777 == file_mode, path
    for path in (tmp_path / "d", result.path, extracted):
        assert path.stat().st_mode & 0o777 == dir_mode, path


# --------------------------------------------------------------------------- issue 17.10


def test_plain_prepare_after_prepare_with_source_needs_no_network(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DWREC_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(dl, "_urlopen", no_network)
    source = _ml100k(tmp_path / "raw")
    assert _run(capsys, ["prepare", "movielens-100k", "--source", str(source)])[0] == 0
    first = _snapshot(datasets_dir() / "movielens-100k")
    status, out, err = _run(capsys, ["prepare", "movielens-100k"])
    assert status == 0, err
    assert "already prepared and up to date" in " ".join(out.split())
    assert _snapshot(datasets_dir() / "movielens-100k") == first


def test_re_preparing_makes_a_dataset_the_most_recent_again(tmp_path):
    a = prepare("movielens-100k", source=_ml100k(tmp_path / "raw"))
    b = prepare("synthetic", options={"users": 30, "items": 60})
    os.utime(a.path / "dataset.json", (1, 1))  # a was prepared long ago
    assert resolve_dataset(None) == b.path
    again = prepare("movielens-100k")  # no --source: the prepared copy is reused
    assert again.skipped and resolve_dataset(None) == a.path


def test_force_without_source_names_the_recorded_source(tmp_path):
    source = _ml100k(tmp_path / "raw")
    prepare("movielens-100k", source=source)
    with pytest.raises(dl.OfflineError, match=f"--source {source}"):
        prepare("movielens-100k", force=True)


@pytest.mark.skipif(
    not (SHARED_DATA / "hetrec2011-lastfm-2k").is_dir(),
    reason="../shared/data/hetrec2011-lastfm-2k not found beside the repository",
)
def test_lastfm_prepared_from_source_then_plainly(capsys):
    source = SHARED_DATA / "hetrec2011-lastfm-2k"
    assert _run(capsys, ["prepare", "lastfm", "--source", str(source)])[0] == 0
    status, out, err = _run(capsys, ["prepare", "lastfm"])
    assert status == 0, err
    assert "already prepared" in out


# --------------------------------------------------------------------------- issue 17.11


@pytest.mark.parametrize("gz", [False, True])
def test_u_data_cut_inside_its_last_line_is_an_error(tmp_path, capsys, gz):
    source = tmp_path / "raw"
    source.mkdir()
    cut = U_DATA[:-6]  # "...\t8812509" : still four valid fields
    if gz:
        (source / "u.data.gz").write_bytes(gzip.compress(cut.encode()))
    else:
        (source / "u.data").write_text(cut)
    out = tmp_path / "out"
    status, _, err = _run(
        capsys, ["prepare", "movielens-100k", "--source", str(source), "--out", str(out)]
    )
    assert status == 1 and len(err.splitlines()) == 1, err
    assert "u.data" in err and "line 4" in err and "no line ending" in err, err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_cut_last_line_of_a_block_read_file_is_an_error(tmp_path):
    path = tmp_path / "user_taggedartists.dat"
    path.write_text("userID\tartistID\n2\t52\n2\t63")
    columns = {"user": pa.int64(), "artist": pa.int64()}
    with pytest.raises(DataFormatError, match=r"line 3: the last line has no line ending"):
        read_delimited(path, columns, delimiter="\t", header=True)
    path.write_text("userID\tartistID\n2\t52\n2\t63\n\n")  # trailing blank lines are fine
    assert read_delimited(path, columns, delimiter="\t", header=True).num_rows == 2


def test_ml1m_dat_cut_is_an_error(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    (source / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::9783")
    (source / "movies.dat").write_text("10::A (1990)::Drama\n20::B (1991)::Comedy\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2: the last line has no"):
        prepare("movielens-1m", source=source, out=tmp_path / "out")


# --------------------------------------------------------------------------- issue 17.16


def test_dataset_aliases_and_helpful_unknown_names(tmp_path):
    with pytest.raises(UsageError, match=r"run `dwrec prepare movielens-1m` first"):
        resolve_dataset("ml-1m")
    # `dwrec prepare ml-100k` is `dwrec prepare movielens-100k` ...
    result = prepare("ml-100k", source=_ml100k(tmp_path / "raw"))
    assert result.path.name == "movielens-100k" and result.meta["name"] == "movielens-100k"
    # ... and --dataset ml-100k then finds it.
    assert resolve_dataset("ml-100k") == result.path
    with pytest.raises(UsageError, match=r"did you mean movielens-100k"):
        resolve_dataset("movielens-100")


def test_folder_without_dataset_json_is_not_sent_to_prepare_folder(tmp_path, capsys):
    folder = _ml100k(tmp_path / "ml-100k").parent
    status, _, err = _run(capsys, ["train", "--dataset", str(folder), "--epochs", "1"])
    assert status == 2, err
    assert "has no dataset.json" in err and f"--source {folder}" in err, err
    assert f"dwrec prepare {folder}" not in err


# --------------------------------------------------------------------------- issue 17.18/19


def test_prepare_help_gives_k_core_defaults_datasets_and_examples(capsys):
    status, out, _ = _run(capsys, ["prepare", "--help"])
    text = " ".join(out.replace("│", " ").split())
    assert status == 0
    assert "[default: 5 for lastfm, lastfm-1k, amazon*, yelp; 0 (none) for" in text
    five = {s.name for s in all_sources() if s.default_min_user == 5}
    assert five == {"lastfm", "lastfm-1k", "amazon", "amazon-electronics", "yelp"}
    assert all(s.default_min_user == s.default_min_item for s in all_sources())
    assert "Examples:" in text and "dwrec prepare movielens-1m --min-rating 4 --name" in text
    for name in ("synthetic", "lastfm-1k", "yelp", "s3rec-beauty/sports/toys/yelp/lastfm"):
        assert name in text


def test_datasets_listing_fits_100_columns_and_says_what_downloads(monkeypatch, capsys):
    import dwrec.commands.datasets as command

    buffer = io.StringIO()
    monkeypatch.setattr(command, "console", Console(file=buffer, width=100))
    assert main(["datasets"]) == 0
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len(lines) <= len(all_sources()) + 5  # header, footer (a long home may fold)
    rows = {line.split()[0]: line.split()[1] for line in lines[1 : len(all_sources()) + 1]}
    assert rows["lastfm"] == "yes" and rows["amazon"] == "manual"
    assert rows["synthetic"] == "generated" and rows["s3rec-beauty"] == "yes"
    buffer.truncate(0)
    assert main(["datasets", "synthetic"]) == 0
    assert "27,519 interactions" in buffer.getvalue()


def test_synthetic_default_size_is_exact():
    result = prepare("synthetic")
    assert result.meta["counts"]["interactions"] == 27519
    assert "27,519 interactions" in registry.get_source("synthetic").size


def _toy_spec(name: str, remote: tuple[RemoteFile, ...]) -> SourceSpec:
    return SourceSpec(
        name=name,
        family="movielens",
        description="toy",
        domains="genres",
        licence="test",
        size="tiny",
        reader=lambda folder, options: None,  # type: ignore[arg-type,return-value]
        remote=remote,
    )


def test_archives_are_recognised_by_checksum_not_name(tmp_path, monkeypatch):
    official = tmp_path / "hetrec2011-lastfm-2k.zip"
    with zipfile.ZipFile(official, "w") as zf:
        zf.writestr("user_taggedartists.dat", "userID\tartistID\n")
    digests = dl.file_digests(official)
    remote = RemoteFile(
        url="https://example.invalid/x.zip", sha256=digests["sha256"], filename=official.name
    )
    toy = _toy_spec("toy-lastfm", (remote,))
    monkeypatch.setitem(registry._REGISTRY, "toy-lastfm", toy)
    renamed = tmp_path / "renamed.zip"
    renamed.write_bytes(official.read_bytes())
    assert dl.resolve_source(toy, renamed).is_dir()  # the official bytes under another name
    assert dl.archive_note(toy, renamed) is None
    # The same bytes given for another dataset are recognised as toy-lastfm's archive.
    other = _toy_spec("toy-other", (RemoteFile(url="u", sha256="0" * 64, filename="o.zip"),))
    with pytest.raises(UsageError, match="official archive of dataset toy-lastfm"):
        dl.resolve_source(other, renamed)
    # A changed archive under another name is prepared as the user's own, with a note.
    tampered = tmp_path / "mine.zip"
    with zipfile.ZipFile(tampered, "w") as zf:
        zf.writestr("user_taggedartists.dat", "userID\tartistID\n2\t52\n")
    dl.resolve_source(toy, tampered)
    note = dl.archive_note(toy, tampered)
    assert note and "is not the official hetrec2011-lastfm-2k.zip" in note


# --------------------------------------------------------------------------- issue 14.8


def _ml1m(folder: Path, ratings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ratings)
    (folder / "movies.dat").write_text("".join(f"{i}::M{i} (1990)::Drama\n" for i in range(1, 10)))
    return folder


def test_tie_report_counts_held_out_ties_like_brute_force(tmp_path, capsys):
    rng = np.random.default_rng(5)
    lines = []
    for user in range(1, 41):
        n = int(rng.integers(1, 9))
        times = np.sort(rng.integers(0, 4, size=n))  # many ties
        items = rng.integers(1, 10, size=n)
        rows = [f"{user}::{i}::4::{1000 + t}\n" for i, t in zip(items, times, strict=True)]
        lines.extend(rows)
    source = _ml1m(tmp_path / "raw", "".join(lines))
    out = tmp_path / "out"
    status, printed, err = _run(
        capsys, ["prepare", "movielens-1m", "--source", str(source), "--out", str(out)]
    )
    assert status == 0, err
    data = load_dataset(out)
    ties = data.meta["held_out_ties"]
    expected_loo = expected_users = 0
    expected_ratio = 0
    for user in range(data.n_users):
        stamps = data.timestamps[data.user_indptr[user] : data.user_indptr[user + 1]].tolist()
        n = len(stamps)
        if n < 3:
            continue
        expected_users += 1
        expected_loo += stamps[-1] == stamps[-2]
        n_test = max(1, round(0.2 * n))
        expected_ratio += stamps[n - n_test] == stamps[n - n_test - 1]
    assert ties["loo"]["users"] == ties["ratio"]["users"] == expected_users
    assert ties["loo"]["test_ties_validation"] == expected_loo > 0
    assert ties["ratio"]["test_ties_validation"] == expected_ratio
    share = f"{expected_loo / expected_users:.1%}"
    assert f"{expected_loo:,} of {expected_users:,} users ({share})" in " ".join(printed.split())


def test_tied_held_out_items_follow_file_order(tmp_path):
    # User 1's last two ratings share a second: the later line (item 3) is the test item.
    source = _ml1m(tmp_path / "raw", "1::1::4::10\n1::3::4::20\n1::2::4::20\n1::4::4::5\n")
    result = prepare("movielens-1m", source=source, out=tmp_path / "out")
    data = load_dataset(result.path)
    assert [data.item_raw_ids[i] for i in data.item_ids] == ["4", "1", "3", "2"]
    assert result.meta["held_out_ties"]["loo"] == {
        "users": 1,
        "test_ties_validation": 1,
        "validation_ties_training": 0,
    }


@pytest.mark.parametrize(
    ("folder", "name", "ties", "users"),
    [("ml-1m", "movielens-1m", 1268, 2999), ("hetrec2011-lastfm-2k", "lastfm", 515, 1152)],
)
def test_real_tie_figures_in_docs(tmp_path, folder, name, ties, users):
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} not found: real-data test needs ../shared/data beside the repo")
    loo = prepare(name, source=path, out=tmp_path / "out").meta["held_out_ties"]["loo"]
    assert (loo["test_ties_validation"], loo["users"]) == (ties, users)
    docs = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
    assert f"{ties:,} of {users:,}" in docs.read_text()


def test_other_flags_are_refused_before_reading_the_raw_files(tmp_path):
    source, out = _ml100k(tmp_path / "raw"), tmp_path / "data"
    prepare("movielens-100k", source=source, out=out)
    source.write_text("not\ta\tratings\tfile\n")  # would fail to parse if it were read
    with pytest.raises(UsageError, match="min-rating None -> 4.0"):
        prepare("movielens-100k", source=source, out=out, min_rating=4.0)


def test_summary_shows_the_densest_and_sparsest_of_many_domains(monkeypatch):
    import dwrec.commands.prepare as command

    buffer = io.StringIO()
    monkeypatch.setattr(command, "console", Console(file=buffer, width=100))
    argv = ["prepare", "synthetic", "--users", "100", "--items", "200", "--domains", "30"]
    assert main(argv) == 0
    text = buffer.getvalue()
    meta = json.loads((datasets_dir() / "synthetic" / "dataset.json").read_text())
    by_share = sorted(meta["domains"], key=lambda d: -meta["domains"][d]["share"])
    shown = [d for d in by_share if f" {d} " in text]
    assert len(by_share) > 20 and shown == by_share[:10] + by_share[-10:]
    assert f"... {len(by_share) - 20} more" in text
    assert max(len(line) for line in text.splitlines()) <= 100
