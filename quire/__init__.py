"""Quire: long-context document analysis on your own hardware."""

__version__ = "0.1.0"
