"""Writing converted dataset files: all-or-nothing (every converter writes through staged_output), one clean field
at a time (field_text)."""
import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def staged_output(folder):
    """Yield a temp folder next to `folder`; its files move into `folder` only if the block succeeds.

    Sub-folders of the temp folder are scratch space and are discarded. The `.inter` file moves last,
    so its presence means the conversion finished.
    """
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-partial-", dir=os.path.dirname(folder) or ".")
    try:
        yield tmp
        for name in sorted(os.listdir(tmp), key=lambda n: n.endswith(".inter")):
            if os.path.isfile(os.path.join(tmp, name)):
                os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def field_text(text):
    """Text as one field of an atomic file: whitespace runs (tabs, line breaks) become one space, and a value that
    starts with a double quote is quoted CSV-style, as RecBole's reader (pandas' read_csv) expects."""
    text = " ".join(text.split())
    return '"' + text.replace('"', '""') + '"' if text.startswith('"') else text
