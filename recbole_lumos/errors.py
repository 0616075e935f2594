"""User-facing errors: one line that names the problem and the fix; run_lumos.py prints it and exits 2."""


class LumosError(Exception):
    """Bad input (files, names, settings). Raise with a message of one line: what is wrong, how to fix it."""
