"""Entry point: `python -m gateway` runs the CLI (serve by default)."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
