"""Quire's entry point: `python app.py` serves the web UI; `python app.py --help` lists the rest."""

import sys

from quire.cli import main

if __name__ == "__main__":
    sys.exit(main())
