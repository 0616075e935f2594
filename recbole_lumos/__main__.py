"""``python -m recbole_lumos -m MODEL -d DATASET ...``: the CLI (benchmark workers start runs this way)."""
import sys

from recbole_lumos.cli import main

sys.exit(main())
