"""The shared halves that several commands import and that have no command of their own.

The top-level files stay the ones users run or know by name (model.py, train.py, sample.py, inherit.py...);
what they share and nobody runs lives here, imported as `from inheritune import compat`.
"""
