"""``dwrec train``: dataset dir -> run dir (a thin layer over :func:`dwrec.train.trainer.train`).

The model, loss and training options are generated from the typed configs of the
registered classes (:func:`dwrec.train.config.option_specs`): one flag per option, its help
and default from the config field, grouped in the Model, Loss and Training panels. Plugins
named on the command line (``--plugin FILE``) are imported before the options are built,
so their options appear too. Every option defaults to "not given" (``None``) so that the
library can tell flags from ``--set`` and TOML values from defaults: flags and ``--set``
override ``--config FILE.toml``, which overrides the defaults.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

import typer

from dwrec.commands._common import THREADS_HELP, console, err_console, next_step, set_threads
from dwrec.errors import UsageError

MODEL = "Model"
LOSS = "Loss"
TRAINING = "Training"
PANELS = {"model": MODEL, "loss": LOSS, "train": TRAINING}
LAUNCH = ("dataset", "model", "loss", "out", "config", "resume", "label", "quiet", "plugin")
"""Options of ``train`` itself (not of a config class), in the order ``--help`` lists them."""


def _numbers(values: list[str] | None, flag: str, kind: type) -> list | None:
    """``["0.9,0.6", "0.3"]`` -> ``[0.9, 0.6, 0.3]`` (comma/space separated or repeated)."""
    if not values:
        return None
    parts = [p for value in values for p in re.split(r"[,\s]+", value.strip()) if p]
    try:
        return [kind(p) for p in parts]
    except ValueError:
        raise UsageError(f"{flag}: expected numbers, got {' '.join(values)!r}") from None


def _plain(hint: Any) -> Any:
    """``int | None`` -> ``int``."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None))
    return hint


def _default_text(spec) -> str:
    if spec.default_text is not None:
        return spec.default_text
    value = spec.default
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "" if value is None else str(value)


def _help(spec, all_models: list[str], model_defaults: dict[str, dict[str, Any]]) -> str:
    text = spec.help.rstrip(".")
    everyone = spec.section == "model" and set(spec.owners) >= set(all_models)
    if spec.section != "train" and spec.name not in ("loss", "objective") and not everyone:
        text = f"{', '.join(spec.owners)}: {text}"
    default = _default_text(spec)
    if spec.section == "model" and everyone:  # models with other defaults say so
        others = [
            f"{name} {values[spec.name]:g}" if isinstance(values[spec.name], float)
            else f"{name} {values[spec.name]}"
            for name, values in model_defaults.items()
            if values.get(spec.name, spec.default) != spec.default
        ]  # fmt: skip
        if others:
            default = f"{default}; {', '.join(others)}"
    elif spec.section == "model" and len(spec.owners) > 1:  # owners with other defaults
        values = [model_defaults.get(name, {}).get(spec.name, spec.default) for name in spec.owners]
        if any(value != spec.default for value in values):
            shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
            default = ", ".join(f"{name} {v}" for name, v in zip(spec.owners, shown, strict=True))
    if spec.section == "loss" and len(spec.owners) > 1:  # a class with its own default
        others = _loss_defaults_differing(spec)
        if others:
            default = f"{default}; {', '.join(others)}"
    return f"{text} \\[{default}]." if default else f"{text}."


def _loss_defaults_differing(spec) -> list[str]:
    """``["dsl 1024"]``: the loss classes whose config gives option ``spec`` a default of
    their own."""
    import dataclasses

    from dwrec.losses.base import OBJECTIVE_CLASSES, WEIGHTING_CLASSES

    others = []
    for owner in spec.owners:
        cls = OBJECTIVE_CLASSES.get(owner) or WEIGHTING_CLASSES.get(owner)
        fields = {f.name: f for f in dataclasses.fields(cls.config_class)} if cls else {}
        f = fields.get(spec.name)
        if f is not None and f.default is not dataclasses.MISSING and f.default != spec.default:
            others.append(f"{owner} {f.default:g}" if isinstance(f.default, float)
                          else f"{owner} {f.default}")  # fmt: skip
    return others


def _option_parameters() -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The generated parameters of the model, loss and training options, and the hint of
    each (the conversion their values need)."""
    import dataclasses

    from dwrec.losses.base import OBJECTIVE_CLASSES, WEIGHTING_CLASSES
    from dwrec.losses.config import loss_classes
    from dwrec.models.registry import model_class, model_names
    from dwrec.train.config import option_specs

    names = model_names()
    model_defaults = {
        name: {f.name: f.default for f in dataclasses.fields(model_class(name).config_class)}
        for name in names
    }
    loss_classes()  # registers the built-in ones
    objectives, weightings = list(OBJECTIVE_CLASSES), list(WEIGHTING_CLASSES)
    params, hints = [], {}
    specs = option_specs()
    order = [s for s in specs.values() if s.section == "model"]
    order += [s for s in specs.values() if s.section == "train"]
    order += [s for s in specs.values() if s.section == "loss" and s.name != "loss"]
    for spec in order:
        hint = _plain(spec.hint)
        flag = f"--{spec.name.replace('_', '-')}"
        help_text = _help(spec, names, model_defaults)
        if spec.name == "objective":
            help_text = f"Objective under a domain weighting ({', '.join(objectives)}) \\[ce]."
        decls, annotation, metavar = [flag], hint, None
        if hint is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
            metavar = ""
        elif typing.get_origin(hint) is list:
            annotation, metavar = list[str], "<" + _plain(typing.get_args(hint)[0]).__name__ + ">"
        option = typer.Option(
            None, *decls, help=help_text, rich_help_panel=PANELS[spec.section], metavar=metavar
        )
        params.append(
            inspect.Parameter(
                spec.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
        hints[spec.name] = hint
    extra = [
        ("threads", int, typer.Option(None, "--threads", help=THREADS_HELP,
                                      rich_help_panel=TRAINING)),
        ("nproc", int, typer.Option(
            None, "--nproc",
            help="Train with N local processes (DistributedDataParallel: gloo on CPU, one GPU "
            "per process on CUDA); --batch-size stays the global batch [1].",
            rich_help_panel=TRAINING)),
    ]  # fmt: skip
    for name, annotation, option in extra:
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    loss_help = (
        f"Objective ({', '.join(objectives)}) or domain weighting ({', '.join(weightings)}; "
        "composed with --objective) \\[ce]."
    )
    return params, {"_loss_help": loss_help, "_models": names, **hints}


def _launch_parameters(loss_help: str, models: list[str]) -> list[inspect.Parameter]:
    def option(name: str, annotation: Any, info: Any) -> inspect.Parameter:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
        )

    return [
        option("dataset", str, typer.Option(
            None, "--dataset",
            help="Dataset dir or prepared name \\[default: the latest prepared].")),
        option("model", str, typer.Option(
            None, "--model", help=f"{', '.join(models)} \\[sasrec].")),
        option("loss", str, typer.Option(None, "--loss", help=loss_help)),
        option("out", Path, typer.Option(
            None, "--out", help="Run dir \\[default: runs/<dataset>-<model>-<loss>-s<seed>].")),
        option("config", Path, typer.Option(
            None, "--config", help="TOML file of options; flags and --set override it.")),
        option("set_", list[str], typer.Option(
            None, "--set", metavar="<key=value>",
            help="Any option by its flat name (e.g. --set w_max=5 --set mml_margins=[0.9,0.5]); "
            "repeatable.")),
        option("resume", Path, typer.Option(
            None, "--resume", help="Continue the stopped run RUN from its last.pt.")),
        option("label", str, typer.Option(
            None, "--label", help="Label in reports \\[<model>+<loss>].")),
        option("plugin", list[Path], typer.Option(
            None, "--plugin", metavar="<file.py>",
            help="Python file that registers a loss, weighting or model (docs/extending.md); "
            "repeatable; recorded with its SHA-256 in config.json.")),
        option("quiet", bool, typer.Option(
            False, "--quiet", "-q", metavar="", help="No progress bar or epoch lines.")),
    ]  # fmt: skip


def _convert(values: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """Flag values -> option values (number lists parsed; ``None`` = not given)."""
    options = {}
    for name, value in values.items():
        hint = hints.get(name)
        if typing.get_origin(hint) is list and value is not None:
            kind = _plain(typing.get_args(hint)[0])
            flag = f"--{name.replace('_', '-')}"
            value = _numbers(value, flag, kind) if kind in (int, float) else (value or None)
        options[name] = value
    return options


def register(app: typer.Typer) -> None:
    from dwrec.plugins import load_entry_points, load_plugins, paths_in_argv

    load_entry_points()
    try:  # a plugin's own options must exist before the command is built
        load_plugins(paths_in_argv(sys.argv[1:]))
    except UsageError:
        pass  # reported again, as a one-line error, when the command runs
    option_params, hints = _option_parameters()
    loss_help, models = hints.pop("_loss_help"), hints.pop("_models")

    def train_command(**kwargs: Any) -> None:
        """Train a model with a loss on a prepared dataset; writes a run dir.

        The run dir holds config.json (fully resolved), model.pt (best valid NDCG@10),
        last.pt (resume state), log.jsonl (one line per epoch), environment.json and, when
        finished, train_done.json. Ctrl-C saves last.pt; continue with --resume RUN.
        """
        from dwrec.train.config import parse_set
        from dwrec.train.trainer import TrainingInterrupted, train

        launch = {name: kwargs.pop(name) for name in (*LAUNCH, "set_")}
        threads, nproc = kwargs.pop("threads"), kwargs.pop("nproc")
        set_threads(threads)
        load_plugins(launch["plugin"])  # before --set, which may name a plugin's option
        options = {**parse_set(launch["set_"]), **_given(_convert(kwargs, hints))}
        for key in ("dataset", "model", "loss", "out"):  # given by --set
            value = options.pop(key, None)
            if launch[key] is None:
                launch[key] = value
        if launch["label"] is not None:
            options["label"] = launch["label"]
        if launch["resume"] is not None:
            new_run = {"--dataset": launch["dataset"], "--model": launch["model"],
                       "--loss": launch["loss"], "--out": launch["out"],
                       "--config": launch["config"]}  # fmt: skip
            given = [flag for flag, value in new_run.items() if value is not None]
            if given:
                raise UsageError(
                    f"--resume {launch['resume']}: {', '.join(given)} cannot be given with "
                    "--resume (a resumed run keeps the settings it started with); to change "
                    "them, start a new run"
                )
        try:
            result = train(
                launch["dataset"],
                model=launch["model"],
                loss=launch["loss"],
                out=launch["out"],
                config_file=launch["config"],
                resume=launch["resume"],
                quiet=launch["quiet"],
                console=console,
                nproc=nproc,
                threads=threads,
                plugins=launch["plugin"] or None,
                **options,
            )
        except TrainingInterrupted as stop:
            err_console.print(f"[yellow]{stop}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        if not launch["quiet"] and result is not None:
            next_step(f"dwrec evaluate {result.run_dir}")

    train_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*_launch_parameters(loss_help, models), *option_params]
    )
    train_command.__annotations__ = {
        p.name: p.annotation for p in train_command.__signature__.parameters.values()
    }
    app.command("train")(train_command)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
