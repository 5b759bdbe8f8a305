"""dwrec: sequential recommendation benchmarks on sparse domains.

The four stages are plain functions (the CLI is a thin layer over them)::

    dwrec.prepare(...)   raw public data -> dataset dir (Parquet)
    dwrec.train(...)     dataset dir -> run dir
    dwrec.evaluate(...)  run dir -> per_user.parquet + metrics.json
    dwrec.report(...)    evaluated runs -> significance-tested tables
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "prepare", "train"]


def prepare(*args, **kwargs):  # noqa: D103 - thin lazy re-export
    from dwrec.data.prepare import prepare as _prepare

    return _prepare(*args, **kwargs)


def train(*args, **kwargs):  # noqa: D103 - thin lazy re-export (see dwrec/train/__init__.py)
    from dwrec.train.trainer import train as _train

    return _train(*args, **kwargs)
