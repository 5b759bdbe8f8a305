"""Plugins: a user's own loss, weighting or model, without forking dwrec.

A plugin is a Python file that registers classes the ordinary way
(:func:`dwrec.losses.base.register_objective`, :func:`~dwrec.losses.base.register_weighting`,
:func:`dwrec.models.registry.register`) when imported. ``dwrec train --plugin FILE.py``
(repeatable) imports it; the run records the file's path and SHA-256 in ``config.json``
(``"plugins"``), and ``dwrec evaluate`` / ``dwrec report`` import the recorded files again,
refusing when one is missing or has changed. Installed packages can also register through
the ``dwrec.plugins`` entry-point group (``importlib.metadata``): every entry point of that
group is loaded when the CLI starts (its value names a module or an object to import).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dwrec.errors import UsageError

ENTRY_POINT_GROUP = "dwrec.plugins"
_LOADED: dict[tuple[str, str], dict[str, str]] = {}
_ENTRY_POINTS_LOADED = False


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plugin(path: str | Path) -> dict[str, str]:
    """Import the plugin file ``path`` (once per path and content) and return its record
    ``{"path": absolute path, "sha256": hex digest}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--plugin {path}: no such file")
    if path.suffix != ".py":
        raise UsageError(f"--plugin {path}: a plugin is a Python file (.py)")
    resolved = path.resolve()
    digest = file_sha256(resolved)
    key = (str(resolved), digest)
    if key in _LOADED:
        return dict(_LOADED[key])
    name = f"dwrec_plugin_{resolved.stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"--plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"--plugin {path}: importing it failed: {exc!r}") from exc
    _LOADED[key] = {"path": str(resolved), "sha256": digest}
    return dict(_LOADED[key])


def load_plugins(paths: Sequence[str | Path] | None) -> list[dict[str, str]]:
    """Import every plugin file of ``paths``; their records, in order, without repeats."""
    records: list[dict[str, str]] = []
    for path in paths or []:
        record = load_plugin(path)
        if record not in records:
            records.append(record)
    return records


def load_recorded(records: Any, where: str | Path) -> None:
    """Import the plugins a run recorded (``config.json`` ``"plugins"``), each checked
    against its recorded SHA-256; a missing or changed file is a :class:`UsageError`
    naming ``where`` (the run's config.json)."""
    for record in records or []:
        try:
            path, digest = Path(record["path"]), str(record["sha256"])
        except (KeyError, TypeError):
            raise UsageError(f"{where}: invalid plugin record {record!r}") from None
        if not path.is_file():
            raise UsageError(
                f"{where}: the run was trained with plugin {path}, which is missing; put it "
                "back (same content) to use this run"
            )
        if file_sha256(path) != digest:
            raise UsageError(
                f"{where}: plugin {path} has changed since the run was trained (sha256 "
                f"{file_sha256(path)[:12]}..., the run recorded {digest[:12]}...); restore "
                "the file the run was trained with"
            )
        load_plugin(path)


def load_entry_points() -> list[str]:
    """Load every ``dwrec.plugins`` entry point once; their names."""
    global _ENTRY_POINTS_LOADED
    from importlib.metadata import entry_points

    found = list(entry_points(group=ENTRY_POINT_GROUP))
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for entry in found:
            try:
                entry.load()
            except Exception as exc:
                raise UsageError(
                    f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}) failed to "
                    f"load: {exc!r}"
                ) from exc
    return [entry.name for entry in found]


def paths_in_argv(argv: Sequence[str]) -> list[str]:
    """The values of ``--plugin FILE`` / ``--plugin=FILE`` in a command line (the CLI loads
    them before it builds the ``train`` options, so a plugin's own options exist)."""
    paths = []
    for index, arg in enumerate(argv):
        if arg == "--plugin" and index + 1 < len(argv):
            paths.append(argv[index + 1])
        elif arg.startswith("--plugin="):
            paths.append(arg.split("=", 1)[1])
    return paths
