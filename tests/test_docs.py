"""The docs cannot drift: every code block of README.md and docs/*.md is run, and no tracked
text file holds an absolute path of a build machine.

How a block is run (the rewriting table, the skip list with its reasons, the raw files
placed) is in tests/docblocks.py. A failure names the page and the line of the block.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import docblocks
import pytest
import torch
from conftest import SHARED_DATA, shared_file
from test_user_commands import _dwrec, place_raw

REPO = docblocks.REPO

# Pages whose blocks take longest (2 cores, 1 thread each); they still run in CI.
SLOW_PAGES = {"docs/results.md", "docs/index.md"}

# Pages whose blocks are known to fail, each with the reason; strict: once they pass, the
# entry must go. Only for pages another branch is rewriting at the time.
PENDING: dict[str, str] = {}  # page -> why its blocks cannot run yet (none)


def _pages_with_code() -> list:
    params = []
    for page in docblocks.pages():
        if not any(block.kind for block in docblocks.blocks(page)):
            continue
        rel = str(page.relative_to(REPO))
        marks = [pytest.mark.slow] if rel in SLOW_PAGES else []
        if rel in PENDING:
            marks.append(pytest.mark.xfail(reason=PENDING[rel], strict=True))
        params.append(pytest.param(page, id=rel, marks=marks))
    return params


def _shim(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "$DOCS_PYTHON" {target} "$@"\n')
    path.chmod(0o755)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_page(page: Path, tmp_path: Path, home: Path) -> tuple[str | None, str, list[str]]:
    """Run ``page``'s blocks in order in ``tmp_path/clone`` with ``DWREC_HOME=home``.

    Returns ``(where, output, skipped)``: ``where`` is ``"page:line"`` of the block that
    failed (None when all passed), ``output`` the end of stdout and stderr."""
    page_blocks = docblocks.blocks(page)
    for name in sorted(docblocks.prepared_names(page_blocks)):
        if name in docblocks.RAW:
            place_raw(home, name, docblocks.RAW[name])
    clone, blocks_dir, user_home = tmp_path / "clone", tmp_path / "blocks", tmp_path / "home"
    for folder in (clone, blocks_dir, user_home):
        folder.mkdir()
    (clone / "docs").symlink_to(REPO / "docs")  # docs/examples/... as seen from a clone
    if SHARED_DATA.parent.is_dir():
        (tmp_path / "shared").symlink_to(SHARED_DATA.parent)  # ../shared seen from the clone
    page_text = page.read_text(encoding="utf-8")
    if any(f"~/{rel}" in page_text for rel in docblocks.HOME_FILES):
        docblocks.stage_home(user_home, shared_file(), page_text)
    helper = '"$DOCS_HELPER" dwrec'
    _shim(tmp_path / "bin" / "dwrec", helper)
    _shim(clone / ".venv" / "bin" / "dwrec", helper)
    _shim(clone / ".venv" / "bin" / "python", "")
    script, skipped = docblocks.page_script(page_blocks, blocks_dir)
    (tmp_path / "page.sh").write_text(script)
    env = dict(os.environ, DWREC_HOME=str(home), DWREC_OFFLINE="1", HOME=str(user_home),
               OMP_NUM_THREADS="1", COLUMNS="120", PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
               DOCS_PYTHON=sys.executable, DOCS_HELPER=str(Path(docblocks.__file__)),
               DWREC_DOCS_REAL=json.dumps(_dwrec()),
               DWREC_DOCS_CUDA="1" if torch.cuda.is_available() else "0")  # fmt: skip
    result = subprocess.run(["bash", str(tmp_path / "page.sh")], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    output = f"--- stdout (end)\n{_tail(result.stdout)}\n--- stderr (end)\n{_tail(result.stderr)}"
    if result.returncode == 0:
        return None, output, skipped
    failed = re.findall(r"DOCS-FAILED-AT (\S+)", result.stderr)
    return (failed[-1] if failed else f"{page.name} (before any block)"), output, skipped


@pytest.mark.parametrize("page", _pages_with_code())
def test_every_block_of_the_page_runs(page, tmp_path, _isolated_home):
    """The page's shell, python and toml blocks, in order, in one fresh folder and home."""
    where, output, skipped = run_page(page, tmp_path, _isolated_home)
    if where is not None:
        pytest.fail(f"{where}: this block of the docs fails\n{output}", pytrace=False)
    print("\n".join(["skipped:", *skipped]) if skipped else "nothing skipped")


def test_a_failing_block_is_named_by_its_page_and_line(tmp_path, _isolated_home):
    """Also a failure in the middle of ``a && b``, of python, and of a wrong TOML key."""
    cases = {
        "```bash\ndwrec --version\ndwrec datasets && dwrec nonsense\n```\n": 3,
        "x\n\n```bash\ndwrec --version\n```\n\n```python\nimport dwrec\nraise SystemExit(3)\n```\n": 7,
        "```toml\nepochs = 2\nwhat = 1\n```\n": 1,
    }
    for number, (text, line) in enumerate(cases.items()):
        page = tmp_path / f"page{number}.md"
        page.write_text(text)
        (tmp_path / str(number)).mkdir()
        where, output, _ = run_page(page, tmp_path / str(number), _isolated_home)
        assert where == f"page{number}.md:{line}", output


def test_the_python_prelude_makes_dwrec_train_tiny(tmp_path, _isolated_home):
    """A python block's ``dwrec.train(..., epochs=50, hidden=64)`` trains 1 epoch at 24-d."""
    block = (
        "import json, dwrec\n"
        "dwrec.prepare('synthetic', options={'users': 100, 'items': 120, 'domains': 4})\n"
        "run = dwrec.train('synthetic', epochs=50, hidden=64, quiet=True).run_dir\n"
        "config = json.loads((run / 'config.json').read_text())\n"
        "print(config['train']['epochs'], config['model']['hidden'], config['model']['max_len'])\n"
    )
    script = tmp_path / "block.py"
    script.write_text(docblocks.PRELUDE + block)
    env = dict(os.environ, DWREC_HOME=str(_isolated_home), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    tiny = docblocks.TINY_PY
    assert out.stdout.split() == [str(tiny["epochs"]), str(tiny["hidden"]), str(tiny["max_len"])]


def test_toml_values_are_checked_against_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    saved = {"label": "sasrec+dynamic", "model": {"name": "sasrec", "hidden": 24},
             "loss": {"loss": "dynamic", "w_max": 5.0}, "train": {"epochs": 1, "lr": 0.001}}  # fmt: skip
    (run / "config.json").write_text(json.dumps(saved))
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 50\nlr = 0.001\n[model]\nname = "sasrec"\nhidden = 128\n'
                    '[loss]\nloss = "dynamic"\nw_max = 5.0\n')  # fmt: skip
    assert docblocks.check_toml(toml) == 0  # epochs and hidden: overridden by the rewrite
    toml.write_text('model = "bert4rec"\n')
    assert docblocks.check_toml(toml) == 1
    toml.write_text("[loss]\nw_max = 4.0\n")
    assert docblocks.check_toml(toml) == 1


def test_blocks_are_found_with_their_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\ndwrec a \\\n  --b  # c\n# d\n\ndwrec e\n```\n\n"
                    "1. item\n\n   ```python\n   x = 1\n   ```\n```\nplain\n```\n")  # fmt: skip
    found = docblocks.blocks(page)
    assert [(b.line, b.lang, b.kind) for b in found] == [(3, "bash", "shell"),
                                                         (13, "python", "python"),
                                                         (16, "", None)]  # fmt: skip
    assert found[1].text == "x = 1"
    lines = [(n, " ".join(text.split())) for n, text in docblocks.commands(found[0])]
    assert lines == [(4, "dwrec a --b # c"), (8, "dwrec e")]


def test_rewrites_make_runs_tiny_and_leave_resume_and_help_alone():
    train = docblocks.rewrite(["train", "--loss", "dynamic", "--device", "cuda"], cuda=False)
    assert train[:5] == ["train", "--loss", "dynamic", "--device", "cpu"]
    assert train[5:] == docblocks.REWRITES["train"]
    assert docblocks.rewrite(["train", "--device", "cuda"], cuda=True)[2] == "cuda"
    assert docblocks.rewrite(["train", "--resume", "runs/x"], cuda=False) == [
        "train", "--resume", "runs/x"]  # fmt: skip
    assert docblocks.rewrite(["evaluate", "--help"], cuda=False) == ["evaluate", "--help"]
    assert docblocks.rewrite(["evaluate"], cuda=False) == ["evaluate"]
    real = docblocks.rewrite(["prepare", "movielens-1m", "--out", "x"], cuda=False)
    assert real == ["prepare", "movielens-1m", "--out", "x", *docblocks.REAL_PREPARE]
    assert docblocks.rewrite(["prepare", "synthetic"], cuda=False) == ["prepare", "synthetic"]


def test_every_skip_rule_is_still_needed():
    """The skip list stays short: a rule that matches no line of the docs is removed."""
    used = set()
    for page in docblocks.pages():
        for block in docblocks.blocks(page):
            if block.kind == "shell":
                rules = [docblocks.skip_rule(text) for _, text in docblocks.commands(block)]
            else:
                rules = (
                    [docblocks.skip_rule(block.text, python=True)] if block.kind == "python" else []
                )
            used |= {rule[0] for rule in rules if rule}
    unused = [p for p, _ in docblocks.SKIP if p not in used]
    assert not unused, f"skip rules matching no docs line (remove them): {unused}"


def test_untagged_blocks_hold_no_commands():
    """A block of commands without a tag would never run: tag it ``bash`` (it then runs) or
    make it a synopsis (``dwrec CMD [--flag ...]``, checked below)."""
    bad = []
    for page in docblocks.pages():
        for block in docblocks.blocks(page):
            if block.kind:
                continue
            for offset, line in enumerate(block.text.splitlines(), start=block.line + 1):
                if re.match(r"(dwrec|torchrun|python3?|\.venv/bin/)\S* ", line) and "[" not in line:
                    bad.append(f"{block.page}:{offset}: {line.strip()}")
    assert not bad, "untagged command lines:\n" + "\n".join(bad)


def test_synopsis_flags_exist():
    """Every ``--flag`` of an untagged ``dwrec CMD [...]`` synopsis is in ``dwrec CMD --help``."""
    from typer.main import get_command

    from dwrec.cli import app

    cli = get_command(app)
    bad = []
    for page in docblocks.pages():
        for block in docblocks.blocks(page):
            m = re.match(r"dwrec (\w+) .*\[", block.text)
            if block.kind or not m:
                continue
            command = cli.commands[m.group(1)]
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            for flag in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", block.text)) - known:
                bad.append(f"{block.where}: dwrec {m.group(1)} has no {flag}")
    assert not bad, "\n".join(sorted(bad))


ABSOLUTE = re.compile(r"(^|[^A-Za-z0-9_.~-])/(work|root|home/[a-z]+|tmp/[A-Za-z0-9_-]+)/")
ALLOWED = re.compile(r"tmp_path|/tmp/\{|mkdtemp|tempfile|TMPDIR")  # test code making temp dirs


def test_no_tracked_text_file_holds_a_machine_path():
    """As the project's pre-stop hook: paths are relative to the repository or ``~``."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                                check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    bad = []
    for name in listed.decode().split("\0"):
        path = REPO / name
        if not name or name == "CHANGELOG.md" or name.endswith(".lock") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8000]:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if ABSOLUTE.search(line) and not ALLOWED.search(line):
                bad.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not bad, "absolute machine paths in tracked files:\n" + "\n".join(bad)


def test_the_path_check_catches_what_the_hook_catches():
    root = "/"  # split so that this file does not hold the paths it checks for
    for line in (f"data in {root}work/shared/data", f"`{root}tmp/run1/x`", f"see {root}home/ann/x",
                 f"{root}root/.cache/dwrec"):  # fmt: skip
        assert ABSOLUTE.search(line), line
    assert not ABSOLUTE.search("~/work/x and ../shared/data and runs/tmp/x and a/work/b")


def test_library_functions_show_their_signature():
    """``help(dwrec.train)`` shows real parameters, ``import dwrec`` still loads no torch, and
    each lazy re-export's parameters are the real function's (name, kind, default)."""
    code = ("import sys, inspect, dwrec; assert 'torch' not in sys.modules, 'import dwrec loads "
            "torch'; print(inspect.signature(dwrec.train))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(dataset=None, *, model=None, loss=None"), out.stdout
    import importlib.util

    import dwrec
    from dwrec.data.prepare import prepare
    from dwrec.eval.evaluator import evaluate_run
    from dwrec.report import report
    from dwrec.train.trainer import train

    spec = importlib.util.spec_from_file_location("_fresh_dwrec", dwrec.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    for name, real in (("prepare", prepare), ("train", train), ("evaluate", evaluate_run),
                       ("report", report)):  # fmt: skip
        lazy = getattr(fresh, name)  # not dwrec.train: importing dwrec.train rebinds it
        ours = inspect.signature(lazy).parameters
        theirs = inspect.signature(real).parameters
        assert ours and ours.get("args") is None, name
        for key, p in ours.items():
            if p.kind is p.VAR_KEYWORD:
                assert theirs[key].kind is p.VAR_KEYWORD if key in theirs else True
                continue
            assert (p.kind, p.default) == (theirs[key].kind, theirs[key].default), (name, key)
        if not any(p.kind is p.VAR_KEYWORD for p in ours.values()):
            assert list(ours) == list(theirs), name
        assert lazy.__doc__, name
