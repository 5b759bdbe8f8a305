"""The shape of the code base (docs/architecture.md): no import cycle among dwrec's modules,
no module over 500 lines, benchmarks on the public API only, no test importing a benchmark."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((ROOT / "dwrec").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    return files


def imported_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """dwrec modules ``path`` imports anywhere (module level or inside a function)."""

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n for n in names if n in known] or [node.module]
        else:
            continue
        found.update(m for n in names if n.startswith("dwrec") and (m := owner(n)))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_dwrec_modules():
    known = module_files()
    graph = {name: imported_modules(path, known) - {name} for name, path in known.items()}
    assert cycles(graph) == []


def test_no_lower_module_imports_the_package_top():
    known = module_files()
    importers = [name for name, path in known.items() if "dwrec" in imported_modules(path, known)]
    # quickstart drives the four public stages, as a user would
    assert sorted(importers) == ["dwrec.quickstart"]


def test_no_dwrec_module_over_500_lines():
    long = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in module_files().items()
    }
    over = {name: n for name, n in long.items() if n > MAX_LINES}
    assert over == {}


def private_uses(path: Path) -> list[str]:
    """``from dwrec... import _x`` and ``anything._x`` (other than ``self``/``cls``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dwrec"):
            found += [f"{node.lineno}: {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_use_finder_sees_both_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from dwrec.eval.evaluator import _ranges, rank_model\n"
        "trainer._step(1)\nself._own = 1\nx.__class__\n"
    )
    assert private_uses(sample) == ["1: _ranges", "2: trainer._step"]


def test_benchmarks_use_only_the_public_api():
    uses = {
        path.name: private_uses(path)
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        if private_uses(path)
    }
    assert uses == {}


def benchmark_imports(path: Path) -> bool:
    """Whether a test file imports from benchmarks/ (``import benchmarks...``, or a
    path built as ``... / "benchmarks"`` to put on ``sys.path`` or load a script from)."""
    text = path.read_text(encoding="utf-8")
    loads = any(f in text for f in ("sys.path.insert", "sys.path.append", "spec_from_file"))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks"):
            return True
        if isinstance(node, ast.Import) and any(
            a.name.startswith("benchmarks") for a in node.names
        ):
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # path / "benchmarks"
            if isinstance(node.right, ast.Constant) and node.right.value == "benchmarks":
                return loads
    return False


def test_the_benchmark_import_finder_sees_each_form(tmp_path):
    forms = {
        "import benchmarks.scale\n": True,
        "from benchmarks._common import machine\n": True,
        'import sys\nsys.path.insert(0, str(ROOT / "benchmarks"))\nimport _common\n': True,
        "spec_from_file_location('x', ROOT / \"benchmarks\" / 'scale.py')\n": True,
        # a script run as a subprocess: its path is built, nothing is imported
        'SCRIPT = ROOT / "benchmarks" / "reproduce_paper.py"\nsubprocess.run([SCRIPT])\n': False,
        "from dwrec.baselines import recbole\n": False,
    }
    for number, (source, imports) in enumerate(forms.items()):
        sample = tmp_path / f"test_{number}.py"
        sample.write_text(source)
        assert benchmark_imports(sample) is imports, source


def test_no_test_imports_a_benchmark_module():
    tests = [p for p in sorted((ROOT / "tests").glob("test_*.py")) if p.name != Path(__file__).name]
    importers = sorted(p.name for p in tests if benchmark_imports(p))
    assert importers == []
