"""Transitional alias of :mod:`core.errors`, kept only for the files reserved to the lead during issue 10.

``backend/llamacpp.py`` and ``bench/context.py`` still import this path and could not be edited on this
branch; once they import ``core.errors`` this module is deleted (tests/test_layers.py fails if anything else
imports it). Every name is the same object as in ``core.errors``.
"""

from core.errors import *  # noqa: F401,F403
