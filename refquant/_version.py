"""The version of refquant, in a module of its own so that every layer can read it.

The package root (``refquant/__init__.py``) re-exports the front-door API, which imports the
executor; a module below it that read ``refquant.__version__`` would close an import cycle.
Keep in step with ``version`` in ``pyproject.toml`` (``tests/test_quickstart.py`` checks).
"""

__version__ = "0.1.0"
