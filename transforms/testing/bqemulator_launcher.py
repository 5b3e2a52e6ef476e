"""Starts `bqemulator` offline; run with the emulator venv's Python, not the project's.

bqemulator loads DuckDB's `spatial` extension at start, which DuckDB downloads; offline that fails.
Only GEOGRAPHY needs it, so the launcher turns the load into a no-op and hands over to the CLI.
"""

import sys

from bqemulator import cli
from bqemulator.storage.engine import DuckDBEngine

DuckDBEngine._load_spatial = lambda self: None

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
