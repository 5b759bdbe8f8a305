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


def prepare(*args, **kwargs):  # noqa: D103 - thin lazy re-export
    from dwrec.data.prepare import prepare as _prepare

    return _prepare(*args, **kwargs)


def train(*args, **kwargs):  # noqa: D103 - thin lazy re-export (see dwrec/train/__init__.py)
    from dwrec.train.trainer import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):  # noqa: D103 - thin lazy re-export of evaluate_run
    from dwrec.eval.evaluator import evaluate_run as _evaluate_run

    return _evaluate_run(*args, **kwargs)


def report(*args, **kwargs):  # noqa: D103 - thin lazy re-export (see dwrec/report/__init__.py)
    from dwrec.report import report as _report

    return _report(*args, **kwargs)
