"""How fast is ``dwrec prepare`` on MovieLens, against plain pandas reads of the same files?

Each measurement runs in a fresh child process, so its peak resident memory (``ru_maxrss``)
is its own; the child repeats the work and reports every wall time. Compared on ML-1M (the
excerpt in ``../shared/data/ml-1m``):

- ``dwrec.prepare("movielens-1m")``: read, re-index, sort, write Parquet, hash the sources;
- the dwrec reader alone (raw files -> in-memory table);
- ``pandas.read_csv(sep="::", engine="python")``: the usual way to read ``.dat`` files;
- ``pandas.read_csv`` with the C engine on the decompressed bytes with ``::`` replaced by a tab
  (decompression and replacement are timed too).

The pandas baselines only read ratings and movies; they do none of dwrec's other steps, so a
ratio near 1 means the whole of prepare costs about one plain read.

``--large`` also generates a synthetic ML-25M-format ``ratings.csv`` (``--large-rows`` rows,
25 million by default, with a matching ``movies.csv``) in a temporary folder, prepares it with
``dwrec.prepare("movielens-25m")`` and reports time and peak memory. Nothing is kept.

Usage::

    python benchmarks/prepare_speed.py [--repeats 5] [--large [--large-rows N]]
                                       [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import write_output

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ML1M = REPO.parent / "shared" / "data" / "ml-1m"
RATING_NAMES = ["user", "item", "rating", "timestamp"]
MOVIE_NAMES = ["item", "title", "genres"]


# --------------------------------------------------------------------------- child side


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux ``VmHWM`` is read, because ``ru_maxrss`` also counts the parent's memory copied
    at fork time, before ``exec``.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _work(method: str, source: Path, scratch: Path):
    """A zero-argument callable doing one repetition of ``method``."""
    import pyarrow as pa

    pa.array([0])  # pyarrow imports pandas (when installed) on first use: count it for all
    if method in ("dwrec-prepare", "prepare-25m", "reader-25m"):
        # Import everything up front so "RSS after imports" is comparable across methods.
        import dwrec.data.prepare  # noqa: F401
        from dwrec.data.sources import get_source

        get_source("movielens-1m")
    if method == "dwrec-prepare":
        import dwrec

        return lambda: dwrec.prepare("movielens-1m", source=source, out=scratch, force=True)
    if method == "dwrec-reader":
        from dwrec.data.sources import get_source

        reader = get_source("movielens-1m").reader
        return lambda: reader(source, {})
    if method == "reader-25m":
        from dwrec.data.sources import get_source

        reader = get_source("movielens-25m").reader
        return lambda: reader(source, {})
    if method == "prepare-25m":
        import dwrec

        return lambda: dwrec.prepare("movielens-25m", source=source, out=scratch, force=True)

    import pandas as pd

    if method == "pandas-c-25m":

        def read_large():
            return pd.read_csv(source / "ratings.csv"), pd.read_csv(source / "movies.csv")

        return read_large
    ratings_path = next(p for p in source.iterdir() if p.name.startswith("ratings.dat"))
    movies_path = source / "movies.dat"
    if method == "pandas-python":

        def read_python_engine():
            ratings = pd.read_csv(ratings_path, sep="::", engine="python", names=RATING_NAMES)
            movies = pd.read_csv(
                movies_path, sep="::", engine="python", names=MOVIE_NAMES, encoding="latin-1"
            )
            return ratings, movies

        return read_python_engine
    if method == "pandas-c":
        import gzip
        import io

        def read_c_engine():
            data = ratings_path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            ratings = pd.read_csv(
                io.BytesIO(data.replace(b"::", b"\t")), sep="\t", names=RATING_NAMES
            )
            text = movies_path.read_bytes().replace(b"::", b"\t")
            movies = pd.read_csv(
                io.BytesIO(text), sep="\t", names=MOVIE_NAMES, encoding="latin-1", quoting=3
            )
            return ratings, movies

        return read_c_engine
    raise SystemExit(f"unknown method {method}")


def run_child(method: str, source: Path, repeats: int) -> None:
    """Time ``repeats`` runs of ``method`` and print one JSON line."""
    scratch = Path(tempfile.mkdtemp(prefix="dwrec-bench-"))
    try:
        work = _work(method, source, scratch / "out")
        rss_before = _peak_rss_mb()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = work()
            times.append(time.perf_counter() - start)
            del result
        report = {"method": method, "times": times, "peak_rss_mb": _peak_rss_mb()}
        report["rss_after_imports_mb"] = rss_before
        print(json.dumps(report))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- parent side


def measure(method: str, source: Path, repeats: int) -> dict:
    env = dict(os.environ, DWREC_HOME=tempfile.mkdtemp(prefix="dwrec-bench-home-"))
    command = [sys.executable, __file__, "--child", method, "--source", str(source)]
    command += ["--repeats", str(repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    finally:
        shutil.rmtree(env["DWREC_HOME"], ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def generate_ml25m_like(folder: Path, rows: int, seed: int = 0) -> dict:
    """Write ``ratings.csv`` and ``movies.csv`` in the ML-25M layout with ``rows`` ratings.

    Sizes follow ML-25M (users ~ rows / 154, 62,423 listed movies with sparse ids up to
    209,171, Zipf-like popularity, half-star ratings); ratings are grouped by user, as
    published. Written in blocks so that generation itself stays small in memory.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users = max(1, rows // 154)
    n_movies = 62_423
    movie_ids = np.sort(rng.choice(np.arange(1, 209_172), size=n_movies, replace=False))
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.9
    popularity /= popularity.sum()
    per_user = rng.lognormal(mean=0.0, sigma=1.2, size=n_users)
    per_user = np.maximum(1, np.round(per_user / per_user.sum() * rows)).astype(np.int64)
    per_user[-1] += rows - per_user.sum()
    if per_user[-1] < 1:  # rounding overshoot: take it from the largest user
        per_user[np.argmax(per_user)] += per_user[-1] - 1
        per_user[-1] = 1
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int64), per_user)
    block = 2_000_000
    with open(folder / "ratings.csv", "wb") as out:
        out.write(b"userId,movieId,rating,timestamp\n")
        options = pacsv.WriteOptions(include_header=False)
        for start in range(0, rows, block):
            n = min(block, rows - start)
            table = pa.table(
                {
                    "userId": users[start : start + n],
                    "movieId": movie_ids[rng.choice(n_movies, size=n, p=popularity)],
                    "rating": rng.integers(1, 11, size=n) / 2.0,
                    "timestamp": rng.integers(789_652_009, 1_574_327_703, size=n),
                }
            )
            pacsv.write_csv(table, out, write_options=options)
    genres = np.array(["Action", "Comedy", "Drama", "Film-Noir", "Horror", "(no genres listed)"])
    picks = genres[rng.integers(0, len(genres), size=n_movies)]
    with open(folder / "movies.csv", "w", encoding="utf-8") as out:
        out.write("movieId,title,genres\n")
        out.writelines(
            f'{m},"Movie {m}, The (2000)",{g}\n' for m, g in zip(movie_ids, picks, strict=True)
        )
    return {"rows": rows, "users": n_users, "bytes": (folder / "ratings.csv").stat().st_size}


def _machine() -> str:
    import pandas
    import pyarrow

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs visible, load average {load} (1/5/15 min) after the runs "
        f"(pyarrow uses {pyarrow.cpu_count()} threads), Python {platform.python_version()}, "
        f"pyarrow {pyarrow.__version__}, pandas {pandas.__version__}"
    )


def _row(label: str, report: dict, reference: float | None) -> str:
    best, median = min(report["times"]), statistics.median(report["times"])
    ratio = f"{best / reference:.2f}x" if reference else "-"
    return (
        f"| {label} | {best:.3f} | {median:.3f} | {ratio} | {report['peak_rss_mb']:.0f} "
        f"| {report['rss_after_imports_mb']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_ML1M)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", action="store_true", help="also time a synthetic ML-25M")
    parser.add_argument("--large-rows", type=int, default=25_000_000)
    parser.add_argument("--large-repeats", type=int, default=1)  # each 25M run is long
    parser.add_argument("--write", type=Path, help="also write the markdown report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.source, args.repeats)
        return
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: ML-1M folder not found (expected ../shared/data/ml-1m)")

    methods = [
        ("dwrec.prepare('movielens-1m') end to end", "dwrec-prepare"),
        ("dwrec reader only (raw files -> table)", "dwrec-reader"),
        ('pandas read_csv(sep="::", engine="python")', "pandas-python"),
        ("pandas read_csv, C engine, `::` -> tab first", "pandas-c"),
    ]
    reports = {key: measure(key, args.source, args.repeats) for _, key in methods}
    large_lines = large_section(args.large_rows, args.large_repeats) if args.large else []
    reference = min(reports["dwrec-prepare"]["times"])
    lines = [
        "# Prepare speed: MovieLens",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} with "
        f"`python benchmarks/prepare_speed.py{' --large' if args.large else ''}"
        f"{f' --large-rows {args.large_rows}' if args.large else ''}`"
        f" (ML-1M: {args.repeats} repeats; large: {args.large_repeats}).",
        "",
        f"Machine: {_machine()}.",
        "",
        f"## ML-1M ({args.source.name}: the 487,650-rating excerpt), {args.repeats} repeats",
        "",
        "Each line runs in a fresh process; times are wall seconds; peak RSS is the whole",
        "process (including Python and library imports, shown separately). The ratio is the best",
        "time over dwrec.prepare's best time. The pandas lines only read the two files; prepare",
        "also re-indexes, sorts, computes per-genre statistics, hashes the sources and writes",
        "Parquet.",
        "",
        "| method | best s | median s | ratio | peak RSS MB | RSS after imports MB |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(label, reports[key], reference) for label, key in methods]
    lines += large_lines
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_output(args.write, text)


def large_section(rows: int, repeats: int) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="dwrec-bench-25m-"))
    try:
        start = time.perf_counter()
        info = generate_ml25m_like(folder, rows)
        generated = time.perf_counter() - start
        large_repeats = max(1, repeats)
        prepared = measure("prepare-25m", folder, large_repeats)
        reader = measure("reader-25m", folder, large_repeats)
        pandas_read = measure("pandas-c-25m", folder, 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reference = min(prepared["times"])
    return [
        "",
        f"## Synthetic ML-25M layout: {info['rows']:,} ratings, {info['users']:,} users, "
        f"62,423 movies ({info['bytes'] / 2**20:,.0f} MiB ratings.csv; generated in "
        f"{generated:.0f} s, not kept)",
        "",
        "| method | best s | median s | ratio | peak RSS MB | RSS after imports MB |",
        "|---|---|---|---|---|---|",
        _row("dwrec.prepare('movielens-25m') end to end", prepared, reference),
        _row("dwrec reader only (raw files -> table)", reader, reference),
        _row("pandas read_csv (C engine), ratings + movies only", pandas_read, reference),
    ]


if __name__ == "__main__":
    main()
