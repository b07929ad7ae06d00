"""Query expansion for the lexical rank: the words a document of the kind uses for what a question names.

Two kinds: financial statements (FINANCIAL) and contracts (CONTRACT).

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
# Contracts (`app.py eval evidence --variants lexical-unexpanded,lexical`, evidence recall at 8K, halves a / b:
# CUAD's questions 93.6 / 91.0% -> 94.4 / 93.0%; asked tersely (cuad-terse) 93.6 / 90.4% -> 94.4 / 91.7%; and
# FinanceBench with FINANCIAL 64.7 / 69.6% -> 82.3 / 78.3%).
# Contracts: what a clause question names, and the words such clauses are drafted in (the kinds are
# CUAD's clause categories; the wording is how agreements commonly put them, not any one contract's).
CONTRACT = [
    (r"governing law|governed by|which (state|country|jurisdiction)|choice of law|applicable law",
     "governed by construed in accordance with the laws of the state"),
    (r"assign(ment|able|ed)?\b|transfer (the|this|its) (agreement|rights)",
     "assign assignment transfer prior written consent successors"),
    (r"cap on liability|limitation of liability|liability (cap|limit)|maximum liability",
     "liability liable shall not exceed aggregate amount paid limitation damages"),
    (r"terminat\w* for convenience|without cause|terminate at any time",
     "terminate for convenience without cause upon days prior written notice"),
    (r"expir\w*|initial term|how long|duration|term of (the|this) (agreement|contract)",
     "term shall commence continue expire years effective date"),
    (r"renew\w*", "renew renewal automatically successive periods term"),
    (r"^\s*parties\s*$|\bwho (are|were) the parties\b|\bwho signed\b|\bsignator", "parties party between among entered into"),
    (r"notice period|how much notice|prior notice", "days prior written notice"),
    (r"exclusiv\w*", "exclusive exclusively sole right"),
    (r"non-?compete|compet\w*", "compete competitive business territory restrict"),
    (r"insurance", "insurance coverage policy insured"),
    (r"audit", "audit inspect books records"),
    (r"warrant\w*", "warrants warranty period defects"),
    (r"confidential\w*|non-?disclosure", "confidential information disclose"),
    (r"indemn\w*", "indemnify hold harmless claims losses"),
]
_RULES = [(re.compile(p, re.IGNORECASE), words) for p, words in FINANCIAL + CONTRACT]


def expand(question: str) -> str:
    """The question with the words its named measures and statements are filed under appended."""
    extra = [words for pattern, words in _RULES if pattern.search(question)]
    return " ".join([question, *extra])
