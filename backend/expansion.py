"""Query expansion for the lexical rank: the words a document of the kind uses for what a question names.

A question says "capex" or "quick ratio"; a 10-K's statements say "purchases of property, plant and
equipment" and "total current assets". Each entry maps a pattern of the question to the words the
evidence holds; they are added to the full-text query (an OR of words ranked by bm25), so a
passage with them ranks higher. The table is about the kind of document (financial statements
as filed with the SEC), not about any one file; its gain is measured by ``app.py eval evidence``.
"""

from __future__ import annotations

import re

FINANCIAL = [
    (r"balance sheet|statement of financial position|financial position",
     "consolidated balance sheets total assets total liabilities equity"),
    (r"cash flow|statement of cash flows", "consolidated statements of cash flows operating activities investing"),
    (r"income statement|statement of income|statement of operations|p&l|profit and loss",
     "consolidated statements of operations income net revenue"),
    (r"\bcapex\b|capital expenditure|capital intensive|fixed asset|pp&e",
     "purchases of property plant equipment capital expenditures"),
    (r"working capital|quick ratio|current ratio|liquidity", "total current assets total current liabilities"),
    (r"inventor(y|ies) turnover|days inventory|inventor(y|ies)", "inventories cost of sales"),
    (r"payable outstanding|\bdpo\b", "accounts payable cost of sales"),
    (r"\broa\b|return on assets", "net income total assets"),
    (r"operating margin|operating income", "operating income revenue net sales"),
    (r"gross margin|gross profit", "gross profit cost of sales revenue"),
    (r"effective tax rate", "effective tax rate provision for income taxes"),
    (r"free cash flow|\bfcf\b", "net cash provided by operating activities purchases of property"),
    (r"\bebitda\b", "depreciation amortization operating income"),
    (r"dividend", "dividends declared per share"),
    (r"segment", "segment results net sales operating income"),
]
_RULES = [(re.compile(p, re.IGNORECASE), words) for p, words in FINANCIAL]


def expand(question: str) -> str:
    """The question with the words its named measures and statements are filed under appended."""
    extra = [words for pattern, words in _RULES if pattern.search(question)]
    return " ".join([question, *extra])
