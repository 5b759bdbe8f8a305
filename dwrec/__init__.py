"""dwrec: sequential recommendation benchmarks on sparse domains.

The four stages are plain functions (the CLI is a thin layer over them)::

    dwrec.prepare(...)   raw public data -> dataset dir (Parquet)
    dwrec.train(...)     dataset dir -> run dir
    dwrec.evaluate(...)  run dir -> per_user.parquet + metrics.json
    dwrec.report(...)    evaluated runs -> significance-tested tables
"""

from __future__ import annotations

from dwrec._version import __version__

__all__ = ["__version__", "evaluate", "prepare", "report", "train"]


# Thin lazy re-exports: ``import dwrec`` stays light (no torch); each signature mirrors the
# real function's so that ``help(dwrec.train)`` shows it (tests/test_docs.py compares them).


def prepare(
    name,
    source=None,
    out=None,
    *,
    min_rating=None,
    min_user_interactions=None,
    min_item_interactions=None,
    dedupe=False,
    force=False,
    options=None,
    progress=False,
    dataset_name=None,
):
    """Prepare dataset ``name`` (see :func:`dwrec.data.prepare.prepare`)."""
    from dwrec.data.prepare import prepare as _prepare

    return _prepare(
        name,
        source,
        out,
        min_rating=min_rating,
        min_user_interactions=min_user_interactions,
        min_item_interactions=min_item_interactions,
        dedupe=dedupe,
        force=force,
        options=options,
        progress=progress,
        dataset_name=dataset_name,
    )


def train(
    dataset=None,
    *,
    model=None,
    loss=None,
    out=None,
    config_file=None,
    resume=None,
    quiet=False,
    console=None,
    callback=None,
    nproc=None,
    **options,
):
    """Train ``model`` with ``loss`` on a prepared dataset and write a run dir; ``options``
    are any other option by its flat name (``epochs=3``, ``hidden=32``). See
    :func:`dwrec.train.trainer.train` (``dwrec/train/__init__.py`` says why it forwards)."""
    from dwrec.train.trainer import train as _train

    return _train(
        dataset,
        model=model,
        loss=loss,
        out=out,
        config_file=config_file,
        resume=resume,
        quiet=quiet,
        console=console,
        callback=callback,
        nproc=nproc,
        **options,
    )


def evaluate(run_dir, split="test", ks=(10,), out=None, **options):
    """Evaluate a finished run: write ``per_user.parquet`` and ``metrics.json`` and return
    the metrics; ``options`` as :func:`dwrec.eval.evaluator.evaluate_run` (``device``,
    ``keep_history``, ``sampled``, ...)."""
    from dwrec.eval.evaluator import evaluate_run as _evaluate_run

    return _evaluate_run(run_dir, split, ks, out, **options)


def report(run_paths=None, **options):
    """Compare groups of evaluated runs with a baseline per domain and cohort; ``options``
    as :func:`dwrec.report.report` (``domains``, ``baseline``, ``cohorts``, ...)."""
    from dwrec.report import report as _report

    return _report(run_paths, **options)
