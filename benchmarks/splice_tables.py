"""Write a reproduction's tables into its docs page verbatim.

docs/reproduction-standard.md holds, below its own prose, the tables that
``benchmarks/reproduce_paper.py`` wrote: ``OUT/tables/verdict.md``, ``OUT/timing.md``, then
``OUT/tables/<dataset>.md`` for each complete dataset in the plan's order. This script
replaces everything from the page's first line starting ``# Verdicts (`` to its end with
those files as they are (the page above it is left alone), atomically, and with ``--figure``
copies ``OUT/lift-vs-share.png`` beside the page. It trains and computes nothing.

    python benchmarks/splice_tables.py --out .bench/reproduce-standard \\
        --page docs/reproduction-standard.md --figure docs/lift-vs-share.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import write_output
from reproduce_paper import budget_order

MARKER = "# Verdicts ("


def tables_text(out: Path) -> str:
    """The verdicts, the timing and each complete dataset's tables, as written under ``out``."""
    tables = out / "tables"
    verdict, timing = tables / "verdict.md", out / "timing.md"
    for path in (verdict, timing):
        if not path.exists():
            raise SystemExit(f"splice_tables: {path} not found: run reproduce_paper.py first")
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    parts = [verdict.read_text(encoding="utf-8"), timing.read_text(encoding="utf-8")]
    for key in budget_order(plan["budget"], plan["datasets"]):
        page = tables / f"{key}.md"
        if page.exists():
            parts.append(page.read_text(encoding="utf-8"))
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def splice(page: Path, text: str) -> str:
    """``page``'s text up to its ``# Verdicts (`` line, then ``text``."""
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(MARKER)), None)
    if start is None:
        raise SystemExit(f"splice_tables: {page} has no line starting {MARKER!r} to replace from")
    return "".join(lines[:start]) + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the reproduction's --out")
    parser.add_argument("--page", type=Path, required=True, help="the docs page to update")
    parser.add_argument("--figure", type=Path, help="copy OUT/lift-vs-share.png here")
    args = parser.parse_args(argv)
    write_output(args.page, splice(args.page, tables_text(args.out)))
    print(f"splice_tables: {args.page} now holds the tables under {args.out}")
    if args.figure is not None:
        figure = args.out / "lift-vs-share.png"
        if not figure.exists():
            raise SystemExit(f"splice_tables: {figure} not found (matplotlib not installed?)")
        shutil.copyfile(figure, args.figure)
        print(f"splice_tables: {args.figure} copied from {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
