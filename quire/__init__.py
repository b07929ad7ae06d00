"""Quire: long-context document analysis on your own hardware."""

import core  # noqa: F401 - first: it turns onnxruntime telemetry off before anything imports it

__version__ = "0.1.0"
