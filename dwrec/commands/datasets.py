"""``dwrec datasets``: the datasets dwrec knows and which are prepared locally."""

from __future__ import annotations

import typer
from rich.table import Table

from dwrec.commands._common import console


def _prepared() -> dict[str, list[str]]:
    """Prepared folders under the datasets folder, by the dataset name they were prepared as."""
    from dwrec.errors import DwrecError
    from dwrec.io import read_json
    from dwrec.paths import datasets_dir

    found: dict[str, list[str]] = {}
    root = datasets_dir()
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        meta_path = folder / "dataset.json"
        if folder.name.startswith(".") or not meta_path.exists():
            continue
        try:
            meta = read_json(meta_path)
            source = (meta.get("request") or {}).get("name") or meta.get("name")
        except (DwrecError, AttributeError):
            source = folder.name
        found.setdefault(str(source), []).append(folder.name)
    return found


def _download(spec) -> str:
    if spec.family == "synthetic":
        return "generated"
    return "yes" if spec.remote else "manual"


def register(app: typer.Typer) -> None:
    @app.command("datasets")
    def datasets_command(
        name: str = typer.Argument(
            None, help="Show one dataset in full: domains, size, licence, how to get it."
        ),
    ) -> None:
        """List known datasets: what they are, whether dwrec downloads them, and which you
        have prepared (`dwrec datasets NAME` shows one in full)."""
        from dwrec.data.sources import all_sources, get_source
        from dwrec.paths import datasets_dir

        prepared = _prepared()
        if name is not None:
            spec = get_source(name)
            _show(spec, prepared.get(spec.name, []))
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        specs = all_sources()
        shown = {spec.name: ", ".join(prepared.get(spec.name, [])) or "-" for spec in specs}
        name_width = max(len(spec.name) for spec in specs)
        prepared_width = min(20, max(8, *(len(text) for text in shown.values())))
        # Rich drops columns rather than shrink a long no-wrap one: size the last one here.
        what_width = max(20, console.width - name_width - 9 - prepared_width - 3 * 2 - 1)
        table.add_column("name", no_wrap=True, min_width=name_width)
        table.add_column("download", no_wrap=True, min_width=9)
        table.add_column("prepared", no_wrap=True, width=prepared_width, overflow="ellipsis")
        table.add_column("what", no_wrap=True, overflow="ellipsis", max_width=what_width)
        for spec in specs:
            table.add_row(spec.name, _download(spec), shown[spec.name], spec.description)
        console.print(table)
        console.print(
            "[dim]download: yes = `dwrec prepare NAME` fetches and checksums the files; "
            "manual = pass --source.\n"
            f"Prepared copies: {datasets_dir()}. Details: `dwrec datasets NAME`.[/]",
            overflow="fold",
        )


def _show(spec, folders: list[str]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("name", spec.name)
    table.add_row("what", spec.description)
    table.add_row("domains", spec.domains)
    table.add_row("size", spec.size)
    table.add_row("licence", spec.licence)
    table.add_row("k-core", f"users >= {spec.default_min_user}, items >= {spec.default_min_item}")
    if spec.family == "synthetic":
        table.add_row("download", "generated locally, nothing to download")
    elif spec.remote:
        urls = "\n".join(r.url for r in spec.remote)
        table.add_row("download", f"automatic, checksum-checked:\n{urls}")
    else:
        table.add_row("download", f"manual: {spec.manual_download}")
    options = spec.extra.get("options")
    if options:
        table.add_row("options", ", ".join(f"{k}={_text(v)}" for k, v in options.items()))
    table.add_row("prepared as", ", ".join(folders) if folders else "-")
    console.print(table)


def _text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "''"
    return "''" if value in ("", None) else str(value)
