"""MovieLens readers: real files from ../shared/data, and fixtures in every variant's format.

The fixtures are written here, byte for byte in the published layouts; the expected rows
come from the literal data the tests write, not from the reader.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import shared_file

import dwrec
from dwrec.data.sources import get_source
from dwrec.errors import DataFormatError, DwrecError, UsageError

# (user, item, rating, timestamp) in file order: timestamps tie and go backwards on purpose.
RATINGS = [
    (2, 30, 4.0, 500),
    (1, 10, 5.0, 300),
    (2, 10, 3.0, 500),
    (1, 20, 2.0, 100),
    (2, 20, 5.0, 400),
    (3, 40, 1.0, 50),
    (2, 40, 4.0, 500),
]
MOVIES = [
    (10, "Misérables, Les (1995)", ["Drama", "Musical"]),
    (20, "American President, The (1995)", ["Comedy", "Drama", "Romance"]),
    (30, 'Great "Quoted" Performances (2001)', ["Documentary"]),
    (40, "Untitled (2019)", []),
]


# --------------------------------------------------------------------------- fixture writers


def _write(path: Path, text: str, encoding: str = "utf-8", gz: bool = False) -> Path:
    data = text.encode(encoding)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rating_text(rating: float) -> str:
    return f"{rating:g}" if rating != int(rating) else str(int(rating))


def write_dat(folder: Path, movies_encoding: str, gz: bool = False, no_genre: str = "") -> Path:
    """ML-1M / ML-10M layout: ``::``-separated ratings.dat and movies.dat."""
    lines = [f"{u}::{i}::{_rating_text(r)}::{t}\n" for u, i, r, t in RATINGS]
    _write(folder / "ratings.dat", "".join(lines), gz=gz)
    movie_lines = [f"{i}::{title}::{'|'.join(g) or no_genre}\n" for i, title, g in MOVIES]
    _write(folder / "movies.dat", "".join(movie_lines), movies_encoding)
    return folder


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(folder: Path, gz: bool = False) -> Path:
    """ML-20M / ML-25M / latest-small layout: ratings.csv and movies.csv with headers."""
    lines = ["userId,movieId,rating,timestamp\n"]
    lines += [f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in RATINGS]
    _write(folder / "ratings.csv", "".join(lines), gz=gz)
    movie_lines = ["movieId,title,genres\n"]
    movie_lines += [
        f"{i},{_csv_field(title)},{'|'.join(g) or '(no genres listed)'}\n" for i, title, g in MOVIES
    ]
    _write(folder / "movies.csv", "".join(movie_lines), gz=gz)
    return folder


GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def write_100k(folder: Path, gz: bool = False) -> Path:
    """ML-100K layout: tab-separated u.data, Latin-1 u.item with 19 flags, u.genre."""
    lines = [f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in RATINGS]
    _write(folder / "u.data", "".join(lines), gz=gz)
    _write(folder / "u.genre", "".join(f"{g}|{k}\n" for k, g in enumerate(GENRES_100K)) + "\n")
    item_lines = []
    for item, title, genres in MOVIES:
        flags = [1 if g in genres else 0 for g in GENRES_100K]
        if not genres:
            flags[0] = 1  # ML-100K marks genre-less movies with the "unknown" flag
        url = "http://us.imdb.com/M/title-exact?x"
        fields = [str(item), title.replace('"', ""), "01-Jan-1995", "", url, *map(str, flags)]
        item_lines.append("|".join(fields) + "\n")
    _write(folder / "u.item", "".join(item_lines), "latin-1")
    return folder


VARIANTS = {
    "movielens-100k": lambda folder, gz=False: write_100k(folder, gz),
    "movielens-1m": lambda folder, gz=False: write_dat(folder, "iso-8859-1", gz),
    "movielens-10m": lambda folder, gz=False: write_dat(folder, "utf-8", gz, "(no genres listed)"),
    "movielens-20m": write_csv,
    "movielens-25m": write_csv,
    "movielens-latest-small": write_csv,
}


def _read(name: str, folder: Path):
    return get_source(name).reader(folder, {})


def _rows(raw) -> list[tuple[int, int, float, int]]:
    table = raw.interactions.to_pydict()
    return list(
        zip(
            map(int, table["user"]),
            map(int, table["item"]),
            table["rating"],
            table["timestamp"],
            strict=True,
        )
    )


# --------------------------------------------------------------------------- every variant


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_reader_returns_every_rating_in_file_order(tmp_path, name, gz):
    raw = _read(name, VARIANTS[name](tmp_path, gz))
    assert _rows(raw) == [(u, i, r, t) for u, i, r, t in RATINGS]
    assert raw.interactions.column("user").to_pylist()[0] == "2", "ids are the file's strings"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reader_gives_titles_and_genre_domains(tmp_path, name):
    raw = _read(name, VARIANTS[name](tmp_path))
    items = {r["raw_id"]: r for r in raw.items.to_pylist()}
    assert set(items) == {str(i) for i, _, _ in MOVIES}
    for item, title, genres in MOVIES:
        expected_title = title.replace('"', "") if name == "movielens-100k" else title
        assert items[str(item)]["title"] == expected_title
        assert sorted(items[str(item)]["domains"]) == sorted(genres)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_no_genre_markers_give_no_domain(tmp_path, name):
    raw = _read(name, VARIANTS[name](tmp_path))
    untitled = next(r for r in raw.items.to_pylist() if r["raw_id"] == "40")
    assert untitled["domains"] == []
    assert any("no domain" in note for note in raw.notes)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_prepare_orders_by_user_then_time_then_file_order(tmp_path, name):
    VARIANTS[name](tmp_path / "raw")
    result = dwrec.prepare(name, source=tmp_path / "raw", out=tmp_path / "out")
    got = pq.read_table(result.path / "interactions.parquet").to_pydict()
    users = pq.read_table(result.path / "users.parquet").column("raw_id").to_pylist()
    items = pq.read_table(result.path / "items.parquet").column("raw_id").to_pylist()
    rows = [
        (int(users[u]), int(items[i]), t)
        for u, i, t in zip(got["user_id"], got["item_id"], got["timestamp"], strict=True)
    ]
    # Independent reference: a stable sort of the literal rows by (user, time).
    expected = sorted(((u, i, t) for u, i, _, t in RATINGS), key=lambda row: (row[0], row[2]))
    assert rows == expected
    assert [row[1] for row in rows if row[0] == 2] == [20, 30, 10, 40]


def test_single_ratings_file_source_finds_movies_beside_it(tmp_path):
    write_dat(tmp_path, "iso-8859-1")
    raw = _read("movielens-1m", tmp_path / "ratings.dat")
    assert len(_rows(raw)) == len(RATINGS)
    assert raw.items.num_rows == len(MOVIES)


def test_single_ratings_file_without_movies_is_read_without_domains(tmp_path):
    write_dat(tmp_path, "iso-8859-1")
    (tmp_path / "movies.dat").unlink()
    (tmp_path / "ratings.dat").rename(tmp_path / "my-ratings.dat")
    raw = _read("movielens-1m", tmp_path / "my-ratings.dat")
    assert len(_rows(raw)) == len(RATINGS) and raw.items.num_rows == 0
    assert any("movies.dat not found" in note for note in raw.notes)


def test_folder_without_movies_file_is_an_error(tmp_path):
    write_dat(tmp_path, "iso-8859-1")
    (tmp_path / "movies.dat").unlink()
    with pytest.raises(DwrecError, match="movies.dat"):
        _read("movielens-1m", tmp_path)


def test_wrong_variant_folder_names_the_missing_file(tmp_path):
    write_dat(tmp_path, "iso-8859-1")
    with pytest.raises(DwrecError, match="ratings.csv"):
        _read("movielens-25m", tmp_path)


def test_reader_options_are_rejected(tmp_path):
    write_dat(tmp_path, "iso-8859-1")
    with pytest.raises(UsageError, match="takes no reader options"):
        get_source("movielens-1m").reader(tmp_path, {"top_n": 5})


# --------------------------------------------------------------------------- malformed input


def _replace_line(path: Path, number: int, text: str, encoding: str = "utf-8") -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text.encode(encoding)
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    "name,file,line,bad,problem",
    [
        ("movielens-1m", "ratings.dat", 4, "1::20::2", "expected 4 fields, found 3"),
        ("movielens-1m", "ratings.dat", 3, "2::10::3::5oo", "'timestamp' is not an integer"),
        ("movielens-10m", "ratings.dat", 2, "1:::10::5::300", "is not an integer"),
        ("movielens-10m", "movies.dat", 2, "20::Title::Drama::extra", "expected 3 fields"),
        ("movielens-25m", "ratings.csv", 5, "1,20,two,100", "'rating' is not a number"),
        ("movielens-latest-small", "movies.csv", 3, '20,"unclosed,Drama', "expected 3 fields"),
        ("movielens-100k", "u.data", 7, "3\t40\t1", "expected 4 fields"),
        ("movielens-100k", "u.item", 2, "20|x|d||u|0|1", "expected 24 fields"),
    ],
)
def test_malformed_line_error_names_file_and_line(tmp_path, name, file, line, bad, problem):
    folder = VARIANTS[name](tmp_path)
    _replace_line(folder / file, line, bad)
    with pytest.raises(DataFormatError) as err:
        _read(name, folder)
    assert err.value.line == line
    assert Path(err.value.path).name == file
    assert f"{file}, line {line}" in str(err.value) and problem in str(err.value)


def test_malformed_line_in_gzip_file_names_the_line(tmp_path):
    folder = write_dat(tmp_path / "src", "iso-8859-1")
    _replace_line(folder / "ratings.dat", 6, "3::40::1::50::9")
    (folder / "ratings.dat.gz").write_bytes(gzip.compress((folder / "ratings.dat").read_bytes()))
    (folder / "ratings.dat").unlink()
    with pytest.raises(DataFormatError, match=r"ratings.dat.gz, line 6: expected 4 fields"):
        _read("movielens-1m", folder)


@pytest.mark.parametrize("name", ["movielens-1m", "movielens-25m", "movielens-100k"])
def test_truncated_gzip_is_a_clear_error(tmp_path, name):
    folder = VARIANTS[name](tmp_path, True)
    (packed,) = folder.glob("*.gz") if name != "movielens-25m" else [folder / "ratings.csv.gz"]
    packed.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) // 2])
    with pytest.raises(DataFormatError, match=f"{packed.name}.*is the file truncated"):
        _read(name, folder)


def test_invalid_utf8_in_ml10m_movies_names_the_line(tmp_path):
    folder = write_dat(tmp_path, "utf-8")
    _replace_line(folder / "movies.dat", 3, "30::Caf\xe9::Drama", encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"movies.dat, line 3: cannot decode as utf-8"):
        _read("movielens-10m", folder)


def test_latin1_titles_of_ml1m_are_decoded(tmp_path):
    folder = write_dat(tmp_path, "iso-8859-1")
    assert "\xe9".encode("latin-1") in (folder / "movies.dat").read_bytes()
    raw = _read("movielens-1m", folder)
    assert "Misérables, Les (1995)" in raw.items.column("title").to_pylist()


def test_duplicate_movie_id_names_its_second_line(tmp_path):
    folder = write_csv(tmp_path)
    with open(folder / "movies.csv", "a", encoding="utf-8") as handle:
        handle.write("20,Again (2000),Drama\n")
    with pytest.raises(DataFormatError, match=r"movies.csv, line 6: movie id 20 is listed twice"):
        _read("movielens-20m", folder)


def test_csv_without_the_expected_header_is_an_error(tmp_path):
    folder = write_csv(tmp_path)
    _replace_line(folder / "ratings.csv", 1, "2,30,4.0,500")
    with pytest.raises(DataFormatError, match=r"ratings.csv, line 1: expected the header"):
        _read("movielens-25m", folder)


def test_bad_genre_flag_in_u_item_names_the_line(tmp_path):
    folder = write_100k(tmp_path)
    lines = (folder / "u.item").read_text("latin-1").splitlines()
    fields = lines[2].split("|")
    fields[-1] = "2"
    lines[2] = "|".join(fields)
    (folder / "u.item").write_text("\n".join(lines) + "\n", "latin-1")
    with pytest.raises(DataFormatError, match=r"u.item, line 3: genre flags must be 0 or 1"):
        _read("movielens-100k", folder)


# --------------------------------------------------------------------------- prepare behaviour


def test_prepare_is_deterministic_to_the_byte(tmp_path):
    write_dat(tmp_path / "raw", "iso-8859-1")
    first = dwrec.prepare("movielens-1m", source=tmp_path / "raw", out=tmp_path / "a")
    second = dwrec.prepare("movielens-1m", source=tmp_path / "raw", out=tmp_path / "b")
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        a = (first.path / name).read_bytes()
        b = (second.path / name).read_bytes()
        assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest(), name


def test_rerun_is_a_no_op_and_force_rebuilds(tmp_path):
    write_csv(tmp_path / "raw")
    out = tmp_path / "out"
    first = dwrec.prepare("movielens-latest-small", source=tmp_path / "raw", out=out)
    assert not first.skipped
    stamp = (out / "interactions.parquet").stat().st_mtime_ns
    again = dwrec.prepare("movielens-latest-small", source=tmp_path / "raw", out=out)
    assert again.skipped and (out / "interactions.parquet").stat().st_mtime_ns == stamp
    forced = dwrec.prepare("movielens-latest-small", source=tmp_path / "raw", out=out, force=True)
    assert not forced.skipped
    assert (out / "interactions.parquet").stat().st_mtime_ns != stamp


def test_prepare_from_a_zip_archive(tmp_path):
    folder = write_dat(tmp_path / "ml-10M100K", "utf-8", no_genre="(no genres listed)")
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, f"ml-10M100K/{path.name}")
    result = dwrec.prepare("movielens-10m", source=archive, out=tmp_path / "out")
    assert result.meta["counts"]["interactions"] == len(RATINGS)
    assert result.meta["counts"]["items_without_domain"] == 1


def test_half_star_ratings_survive_min_rating(tmp_path):
    folder = tmp_path / "raw"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,3.5,1\n1,20,4.0,2\n")
    _write(folder / "movies.csv", "movieId,title,genres\n10,A,Drama\n20,B,Drama\n")
    raw = _read("movielens-25m", folder)
    assert raw.interactions.column("rating").to_pylist() == [3.5, 4.0]
    result = dwrec.prepare("movielens-25m", source=folder, out=tmp_path / "out", min_rating=4.0)
    assert result.meta["counts"]["interactions"] == 1


# --------------------------------------------------------------------------- registry


def test_every_variant_pins_an_official_url_and_checksum():
    for name in VARIANTS:
        spec = get_source(name)
        assert spec.family == "movielens"
        assert spec.default_min_user == 0 and spec.default_min_item == 0
        (remote,) = spec.remote
        assert remote.url.startswith("https://files.grouplens.org/datasets/movielens/ml-")
        assert remote.url.endswith(remote.filename)
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
        assert remote.size and remote.size > 0
    assert get_source("movielens-1m").remote[0].md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert get_source("movielens-100k").remote[0].md5 == "0e33842e24a9c977be4e0107933c0723"


# --------------------------------------------------------------------------- real data


def test_real_ml1m_excerpt_counts(shared_data, tmp_path):
    source = shared_file("ml-1m", "ratings.dat.gz").parent
    result = dwrec.prepare("movielens-1m", source=source, out=tmp_path / "ml1m")
    counts = result.meta["counts"]
    assert (counts["interactions"], counts["users"], counts["items"]) == (487_650, 2_999, 3_615)
    assert counts["domains"] == 18
    domains = result.meta["domains"]
    assert (domains["Film-Noir"]["items"], domains["Film-Noir"]["interactions"]) == (44, 8_845)
    assert (domains["Horror"]["items"], domains["Horror"]["interactions"]) == (336, 36_887)
    titles = pq.read_table(result.path / "items.parquet").column("title").to_pylist()
    assert "Misérables, Les (1995)" in titles
    core = dwrec.prepare(
        "movielens-1m",
        source=source,
        out=tmp_path / "ml1m-5",
        min_user_interactions=5,
        min_item_interactions=5,
    )
    core_counts = core.meta["counts"]
    assert (core_counts["interactions"], core_counts["users"], core_counts["items"]) == (
        486_907,
        2_999,
        3_266,
    )


def test_real_ml1m_interactions_are_sorted_by_user_and_time(shared_data, tmp_path):
    source = shared_file("ml-1m", "ratings.dat.gz").parent
    result = dwrec.prepare("movielens-1m", source=source, out=tmp_path / "ml1m")
    table = pq.read_table(result.path / "interactions.parquet")
    users = table.column("user_id").to_numpy()
    times = table.column("timestamp").to_numpy()
    assert np.all(np.diff(users) >= 0)
    same_user = np.diff(users) == 0
    assert np.all(np.diff(times)[same_user] >= 0)


def test_real_ml100k_counts(shared_data, tmp_path):
    source = shared_file("ml-100k", "u.data.gz").parent
    result = dwrec.prepare("movielens-100k", source=source, out=tmp_path / "ml100k")
    counts = result.meta["counts"]
    assert (counts["interactions"], counts["users"], counts["items"]) == (100_000, 943, 1_682)
    domains = result.meta["domains"]
    assert "unknown" not in domains
    assert (domains["Film-Noir"]["items"], domains["Film-Noir"]["interactions"]) == (24, 1_733)
    assert (domains["Horror"]["items"], domains["Horror"]["interactions"]) == (92, 5_317)
