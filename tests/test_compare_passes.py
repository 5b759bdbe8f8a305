"""benchmarks/compare_passes.py, run as a subprocess on the first pass's committed page (its
tables as reproduce_paper.py wrote them) and on copies of it with known changes."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compare_passes.py"
FIRST = REPO / "docs" / "reproduction-standard-first-pass.md"


def compare(first: Path, second: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--first", str(first), "--second",
                           str(second)], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip


def overall_rows(text: str) -> list[list[str]]:
    section = text.split("## Overall test metrics")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]


def test_a_page_against_itself_agrees_everywhere():
    done = compare(FIRST, FIRST)
    assert done.returncode == 0, done.stderr
    rows = overall_rows(done.stdout)
    assert len(rows) >= 3 * 16 * 2  # three datasets x 16 groups x 2 metrics
    assert {(row[5], row[6], row[7]) for row in rows} == {("+0.0000", "1", "1")}
    total = re.search(r"^\| all \| \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| "
                      r"\*\*(\d+)\*\* \|$", done.stdout, re.M)  # fmt: skip
    assert total and len(set(total.groups())) == 1 and int(total.group(1)) > 100
    assert "differs between the passes (0):" in done.stdout


def test_a_changed_mean_and_a_lost_significance_are_reported(tmp_path):
    text = FIRST.read_text(encoding="utf-8")
    # one group's overall Recall@10 moves by about three sds; one cell loses its star
    old_row = "| sasrec+generic | ce | 3 | 0.2596 (0.0037) |"
    assert text.count(old_row) == 1
    text = text.replace(old_row, "| sasrec+generic | ce | 3 | 0.2720 (0.0050) |")
    lines = text.splitlines(keepends=True)
    ml1m = next(i for i, line in enumerate(lines) if line.startswith("# ml-1m ("))
    row = next(i for i in range(ml1m, len(lines))
               if lines[i].startswith("| Film-Noir   | sasrec+dynamic  "))  # fmt: skip
    assert "0.00852*" in lines[row]
    lines[row] = lines[row].replace("0.00852*", "0.0852 ")
    second = tmp_path / "second.md"
    second.write_text("".join(lines), encoding="utf-8")
    done = compare(FIRST, second)
    assert done.returncode == 0, done.stderr
    rows = overall_rows(done.stdout)
    moved = [row for row in rows if row[:3] == ["ml-1m", "sasrec+generic", "recall@10"]]
    assert len(moved) == 1 and moved[0][5] == "+0.0124"
    # Welch's test from its closed form: t, then Welch-Satterthwaite's degrees of freedom
    v1, v2 = 0.0037**2 / 3, 0.0050**2 / 3
    t = (0.2720 - 0.2596) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)
    p = 2 * stats.t.sf(t, df)
    assert float(moved[0][6]) == float(f"{p:.3g}")
    # the only p below 1: Holm multiplies it by the number of comparisons
    assert float(moved[0][7]) == float(f"{min(1.0, len(rows) * p):.3g}")
    assert all(row[6] == "1" for row in rows if row is not moved[0])
    assert "differs between the passes (1):" in done.stdout
    counts = re.search(r"^\| ml-1m \| sasrec \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$",
                       done.stdout, re.M)  # fmt: skip
    n, same, inside_first, inside_second = map(int, counts.groups())
    assert same == n - 1 and inside_first == inside_second == n  # the lift itself is unchanged
    listed = [line for line in done.stdout.splitlines() if line.startswith("| ml-1m | sasrec | F")]
    assert len(listed) == 1 and "| Film-Noir | sasrec+dynamic | recall@10 |" in listed[0]
    assert "p=0.00852*" in listed[0] and "p=0.0852" in listed[0]


def test_pages_with_no_dataset_in_common_are_refused_by_name(tmp_path):
    text = FIRST.read_text(encoding="utf-8")
    empty = tmp_path / "empty.md"
    empty.write_text(text[: text.index("# ml-1m (")], encoding="utf-8")
    done = compare(FIRST, empty)
    assert done.returncode != 0
    assert "no dataset has tables in both" in done.stderr and "empty.md (none)" in done.stderr
