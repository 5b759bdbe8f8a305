"""Training: ``dwrec.train(...)`` (see :func:`dwrec.train.trainer.train`).

``dwrec.train`` is both this package and the library function: importing a submodule
(``dwrec.train.trainer``) rebinds the attribute ``dwrec.train`` to the package, so the package
itself is made callable and forwards to :func:`dwrec.train.trainer.train`.
"""

from __future__ import annotations

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from dwrec.train.trainer import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
