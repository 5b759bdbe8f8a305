"""Find and run the fenced code blocks of README.md and docs/*.md (used by tests/test_docs.py).

A page's executable blocks (``bash``/``sh``/``shell``/``console``, ``python``/``py``,
``toml``) become ONE bash script, run in order in a fresh working folder and a fresh
``DWREC_HOME``, so that a page's prepare -> train -> evaluate -> report blocks build on
each other exactly as a reader's terminal would. Any other block (no tag, ``text``,
output, tables) is prose and is not run.

- shell lines run verbatim through bash (variables, ``\\`` continuations and brace
  expansion are bash's own); ``dwrec`` (and ``.venv/bin/dwrec``) is a shim that applies the
  small rewriting table :data:`REWRITES` (tiny sizes, CPU), then runs the installed console
  script; a line matching :data:`SKIP` is not run (each rule says why).
- a python block runs as a script (a fresh interpreter) after a prelude that gives
  ``dwrec.train`` the same tiny sizes (:data:`TINY_PY`); each python block is
  self-contained (its own imports).
- a toml block is a ``dwrec train`` config, unless it is a ``pyproject.toml`` excerpt (a
  ``[project...]`` table: it must parse and name dwrec's plugin entry-point group); it is written
  to a file, trained on with ``dwrec train --config FILE`` and every value it sets (but the
  sizes the rewrite overrides) must be in the run's ``config.json``.

The working folder is ``<tmp>/clone`` with ``<tmp>/shared`` linking to the real
``../shared``, so the docs' ``../shared/data/...`` paths work as written from a clone; the
raw files of every dataset a page prepares by name are placed in ``$DWREC_HOME/raw/NAME``
(:data:`RAW`), as on an offline machine. A failure names the page and line of the block.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]

LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "shell",
         "python": "python", "py": "python", "toml": "toml"}  # fmt: skip

# Lines (after joining ``\`` continuations) that are not run, each with its reason. Keep it
# short: every rule must match some line of the docs (test_docs checks it).
SKIP: list[tuple[str, str]] = [
    (
        r"\bpip install\b",
        "installs dwrec and torch from the network; the suite runs inside that install",
    ),
    (r"-m pytest\b", "runs (part of) the test suite, which CI runs itself"),
    (
        r"\bbenchmarks/",
        "benchmark scripts run for minutes to hours; tests/test_reproduce_paper.py"
        " and the benchmark's own tests cover them",
    ),
    (
        r"--source \S+\.zip\b",
        "the publisher's archive (checksum-pinned) is not in ../shared/data; "
        "tests/test_download.py checks archives",
    ),
    (
        r"^torchrun\b|--nproc\b|\bnproc=",
        "multi-process training (and `...` placeholders); tests/test_distributed.py runs it",
    ),
]

# How `dwrec ...` lines are rewritten so that a page runs in seconds (appended flags win:
# the last value of a repeated option is the one used). Sizes never change which code runs.
# Besides, `--device cuda` becomes `--device cpu` where torch has no CUDA (DWREC_DOCS_CUDA=0).
REWRITES: dict[str, list[str]] = {
    "train": ["--epochs", "1", "--max-len", "20", "--hidden", "24", "--threads", "1"],
    "quickstart": ["--epochs", "1", "--seeds", "1", "--threads", "1"],
    "report": ["--bootstrap", "200", "--permutations", "200"],
}
# `dwrec prepare NAME` of a real dataset (a key of RAW) keeps only its heaviest users (458
# of ML-1M's 2,999 here), so that training, evaluating and reporting on it take seconds.
REAL_PREPARE = ["--min-user-interactions", "300"]
TINY_PY = {"epochs": 1, "max_len": 20, "hidden": 24}  # the same for dwrec.train(...)

# Dataset name in `dwrec prepare NAME` -> its raw files under ../shared/data.
RAW = {
    "movielens-1m": "ml-1m",
    "movielens-100k": "ml-100k",
    "lastfm": "hetrec2011-lastfm-2k",
}

# Files a page assumes in the reader's home (`--source ~/...`), built from ../shared/data:
# path under ~ -> the shared folder copied there.
HOME_FILES = {"data/ml-1m": "ml-1m", "data/ml-100k": "ml-100k"}


def stage_home(home: Path, shared_data: Path, page_text: str) -> None:
    """Place the :data:`HOME_FILES` that ``page_text`` mentions (as ``~/PATH``) in ``home``."""
    for rel, folder in HOME_FILES.items():
        if f"~/{rel}" in page_text:
            shutil.copytree(shared_data / folder, home / rel)


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository, e.g. "docs/train.md"
    line: int  # line of the opening fence (1-based)
    lang: str  # the fence's tag, lower case ("" when none)
    text: str

    @property
    def kind(self) -> str | None:
        """The block's kind: "shell", "python", "toml", or None for prose/output blocks."""
        return LANGS.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` (indented fences inside lists included)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        name = str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name
        found.append(Block(name, start, lang.lower(), "\n".join(body)))
        i += 1
    return found


def commands(block: Block) -> list[tuple[int, str]]:
    """A shell block's logical lines ``(line number in the page, text)``: continuations
    joined, blank and comment lines dropped, ``$ `` prompts stripped (``console`` blocks
    run only their prompt lines)."""
    out, pending, first = [], "", 0
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        line = raw
        if block.lang == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            first = offset
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending.strip():
        out.append((first, pending))
    return out


def skip_rule(text: str, python: bool = False) -> tuple[str, str] | None:
    """The :data:`SKIP` rule ``(pattern, reason)`` that a shell line (its comment left out)
    or a whole python block matches, if any."""
    command = text if python else text.split(" #")[0].strip()
    return next((rule for rule in SKIP if re.search(rule[0], command, re.MULTILINE)), None)


def prepared_names(page_blocks: list[Block]) -> set[str]:
    """Names a page prepares (``dwrec prepare NAME``, ``dwrec.prepare("NAME")``)."""
    text = "\n".join(b.text for b in page_blocks if b.kind)
    return set(re.findall(r"""(?:dwrec prepare |dwrec\.prepare\(["'])([\w.-]+)""", text))


PRELUDE = f"""\
import functools as _functools

import dwrec.train.trainer as _trainer

_real_train = _trainer.train


@_functools.wraps(_real_train)
def _tiny_train(*args, **kwargs):  # tests/docblocks.py: tiny sizes, as for `dwrec train`
    if kwargs.get("resume") is None:
        kwargs.update({TINY_PY!r})
    return _real_train(*args, **kwargs)


_trainer.train = _tiny_train  # dwrec.train(...) calls it (dwrec/train/__init__.py)
del _functools, _trainer
# ---- the block ----
"""


def _step(where: str, text: str) -> str:
    """One command; its failure (also inside ``a && b``) stops the page, naming ``where``."""
    return f"{{\n{text}\n}} || docs_failed {shlex.quote(where)}"


def page_script(page_blocks: list[Block], blocks_dir: Path) -> tuple[str, list[str]]:
    """The bash script that runs a page's executable blocks in order, and the skipped lines
    (``"page:line: command -- reason"``)."""
    out = ["set -o pipefail", 'docs_failed() { echo "DOCS-FAILED-AT $1" >&2; exit 1; }']
    skipped = []
    for block in page_blocks:
        if block.kind == "shell":
            for line, text in commands(block):
                rule = skip_rule(text)
                where = f"{block.page}:{line}"
                if rule:
                    skipped.append(f"{where}: {text.strip()} -- {rule[1]}")
                    continue
                out.append(_step(where, text))
        elif block.kind == "python":
            rule = skip_rule(block.text, python=True)
            if rule:
                skipped.append(f"{block.where}: python block -- {rule[1]}")
                continue
            path = blocks_dir / f"{block.page.replace('/', '_')}-{block.line}.py"
            path.write_text(PRELUDE + block.text + "\n", encoding="utf-8")
            out.append(_step(block.where, f'"$DOCS_PYTHON" {shlex.quote(str(path))}'))
        elif block.kind == "toml" and "project" in _toml_or_empty(block.text):
            # a pyproject.toml excerpt (a plugin package's entry point), not a train config:
            # it must parse and name the entry-point group dwrec reads
            from dwrec.plugins import ENTRY_POINT_GROUP

            groups = tomllib.loads(block.text)["project"].get("entry-points", {})
            if ENTRY_POINT_GROUP not in groups:
                out.append(_step(block.where, f"echo 'no {ENTRY_POINT_GROUP} group' >&2; false"))
        elif block.kind == "toml":
            path = blocks_dir / f"{block.page.replace('/', '_')}-{block.line}.toml"
            path.write_text(block.text + "\n", encoding="utf-8")
            quoted = shlex.quote(str(path))
            out.append(_step(block.where, f"dwrec train --config {quoted}"))
            out.append(_step(block.where, f'"$DOCS_PYTHON" "$DOCS_HELPER" check-toml {quoted}'))
    return "\n".join(out) + "\n", skipped


def _toml_or_empty(text: str) -> dict:
    """The parsed block, or ``{}`` when it is not valid TOML (then it runs as a train config,
    whose failure names the page and line)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def rewrite(argv: list[str], cuda: bool) -> list[str]:
    """The rewriting table applied to ``dwrec ARGV`` (see :data:`REWRITES`)."""
    argv = list(argv)
    if not cuda:
        argv = ["cpu" if a == "cuda" and i and argv[i - 1] == "--device" else a
                for i, a in enumerate(argv)]  # fmt: skip
        argv = ["--device=cpu" if a == "--device=cuda" else a for a in argv]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "train" and "--resume" in argv:
        return argv
    if "--help" in argv or "-h" in argv:
        return argv
    if command == "prepare":
        name = next((a for a in argv[argv.index(command) + 1 :] if not a.startswith("-")), "")
        return argv + (REAL_PREPARE if name in RAW else [])
    return argv + REWRITES.get(command, [])


def run_dwrec(argv: list[str]) -> int:
    """The ``dwrec`` shim: rewrite, run the real console script, refuse tracebacks."""
    real = json.loads(os.environ["DWREC_DOCS_REAL"])
    line = rewrite(argv, os.environ.get("DWREC_DOCS_CUDA") == "1")
    print(f"docs-shim: dwrec {shlex.join(line)}", file=sys.stderr, flush=True)
    result = subprocess.run(real + line, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if "Traceback" in result.stdout + result.stderr:
        print("docs-shim: a traceback is a defect", file=sys.stderr)
        return 1
    return result.returncode


def _newest_run(runs: Path) -> Path:
    configs = sorted(runs.rglob("config.json"), key=lambda p: p.stat().st_mtime_ns)
    if not configs:
        raise SystemExit(f"no run under {runs}")
    return configs[-1].parent


def check_toml(path: Path) -> int:
    """Every value the TOML sets (but those :data:`REWRITES` overrides) is in the newest
    run's ``config.json``: read with tomllib, not with dwrec's own loader."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    saved = json.loads((_newest_run(Path("runs")) / "config.json").read_text())
    overridden = {a.lstrip("-").replace("-", "_") for a in REWRITES["train"] if a[0] == "-"}
    wanted = []
    for key, value in document.items():
        if isinstance(value, dict):
            wanted += [(("name" if (key, k) == ("model", "name") else k), v)
                       for k, v in value.items()]  # fmt: skip
        else:
            wanted.append(("name" if key == "model" else key, value))
    bad = []
    for key, value in wanted:
        if key in overridden or key in ("dataset", "out"):  # paths: resolved on the way
            continue
        if key == "label":
            got = saved.get("label")
        else:
            got = next((saved[s][key] for s in ("model", "loss", "train") if key in saved[s]),
                       "<missing>")  # fmt: skip
        if got != value:
            bad.append(f"{key} = {value!r} in the TOML but {got!r} in config.json")
    for message in bad:
        print(f"docs: {path.name}: {message}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "dwrec":
        sys.exit(run_dwrec(sys.argv[2:]))
    if sys.argv[1] == "check-toml":
        sys.exit(check_toml(Path(sys.argv[2])))
    raise SystemExit(f"unknown helper command {sys.argv[1]!r}")
