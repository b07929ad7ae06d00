"""Transitional alias of :mod:`core.settings`, kept only for the files reserved to the lead during issue 10.

``backend/llamacpp.py`` and ``bench/context.py`` still import this path and could not be edited on this
branch; once they import ``core.settings`` this module is deleted (tests/test_layers.py fails if anything else
imports it). Every name is the same object as in ``core.settings``.
"""

from core.settings import *  # noqa: F401,F403
