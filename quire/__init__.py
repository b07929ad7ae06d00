"""Quire: long-context document analysis on your own hardware."""

import os

__version__ = "0.1.0"

# onnxruntime (imported by PyMuPDF's layout module on `import pymupdf`, and by RapidOCR) writes a device
# id and a telemetry database under ~/.cache/Microsoft on every run, unless this is set before it is
# first imported; Quire keeps nothing outside its data directory. Set here, the first module of every
# process (worker processes import it too, and inherit it), so that it comes before any such import.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
