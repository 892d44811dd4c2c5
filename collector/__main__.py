"""`python -m collector run|check|sim|bench`: the `collector` command (collector/cli.py) without the script."""

from __future__ import annotations

import sys

from collector.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m collector"))
