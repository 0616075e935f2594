"""Where the package finds its files and where runs write caches.

``PROPERTIES``: the yaml shipped inside the package (``recbole_lumos/properties``), so a non-editable
``pip install .`` finds them from any folder. ``CACHE_HOME``: the folder whose ``.cache/`` holds generated
views, catalogue embeddings and converted models. In a repository checkout it is the checkout (caches survive
whatever folder a run starts in); in an installed package it is the working directory at import, never
site-packages (which may be read-only and is shared by every project).
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROPERTIES = PACKAGE_DIR / "properties"
IMPORT_ROOT = PACKAGE_DIR.parent  # the sys.path entry that holds the package (child processes get it)
_CHECKOUT = IMPORT_ROOT
IN_CHECKOUT = (_CHECKOUT / "setup.py").is_file() and (_CHECKOUT / ".git").exists()
CACHE_HOME = _CHECKOUT if IN_CHECKOUT else Path.cwd()
CACHE_ROOT = CACHE_HOME / ".cache"
