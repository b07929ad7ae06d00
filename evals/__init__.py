"""Built-in long-context evaluations: needle in a haystack, CUAD clause finding, L-Eval QA.

``python app.py eval needle|cuad|leval|list``; runs are stored in the database
(:mod:`evals.store`, with :func:`evals.store.list_runs` for the UI) and written
as JSON, CSV/Markdown tables and PNG plots.
"""
