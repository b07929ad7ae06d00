"""Transitional alias of :mod:`core.document`, kept only for the files reserved to the lead during issue 10.

``backend/llamacpp.py`` and ``bench/context.py`` still import this path and could not be edited on this
branch; once they import ``core.document`` this module is deleted (tests/test_layers.py fails if anything else
imports it). Every name is the same object as in ``core.document``.
"""

from core.document import *  # noqa: F401,F403
