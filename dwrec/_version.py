"""dwrec's version (a leaf module: lower modules read it without importing the package top)."""

__version__ = "0.1.0.dev0"
