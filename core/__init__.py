"""The ground floor: what every layer shares and nothing of the project's own lies under.

``settings`` (the one Settings object and its defaults), ``errors`` (the error hierarchy),
``document`` (what an extractor returns: locators, segments, parsed documents),
``records`` (what storage hands back: sessions, documents, segments, turns, citations,
evaluation runs) and ``tokens`` (the model-independent token estimate). Modules here import
the standard library and small third-party packages only, never ``storage``, ``ingest``,
``backend``, ``quire`` or a front end.
"""
