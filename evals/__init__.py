"""Built-in long-context evaluations: needle in a haystack, CUAD clause finding, L-Eval QA.

``python app.py eval needle|cuad|leval|list``; runs are stored in the database
(``storage/eval_runs.py``, reached through ``Quire.eval_runs()`` and its neighbours) and written
as JSON, CSV/Markdown tables and PNG plots.
"""
