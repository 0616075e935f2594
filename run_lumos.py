"""Train and evaluate a model, the RecBole way: a thin wrapper of ``recbole_lumos.cli`` (installed as the
``recbole-lumos`` command) for use from a checkout.

    python run_lumos.py -m LUMOS -d ml-100k          # or --model=LUMOS --dataset=ml-100k; --help for the rest
"""
import sys

from recbole_lumos.cli import main, parse_args  # noqa: F401  (tests and scripts call run_lumos.main)

if __name__ == "__main__":
    sys.exit(main())
