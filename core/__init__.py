"""The ground floor: what every layer shares and nothing of the project's own lies under.

``settings`` (the one Settings object and its defaults), ``errors`` (the error hierarchy),
``document`` (what an extractor returns: locators, segments, parsed documents),
``records`` (what storage hands back: sessions, documents, segments, turns, citations,
evaluation runs) and ``tokens`` (the model-independent token estimate). Modules here import
the standard library and small third-party packages only, never ``storage``, ``ingest``,
``backend``, ``quire`` or a front end.
"""

import os

# onnxruntime (imported by PyMuPDF's layout module on `import pymupdf`, and by RapidOCR) writes a device
# id and a telemetry database under ~/.cache/Microsoft on every run, unless this is set before it is
# first imported; Quire keeps nothing outside its data directory. Set here, in the package every layer
# imports first (worker processes import it too, and inherit it), so that it comes before any such import.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
