"""recbole-lumos: LUMOS (federated sequential recommendation with on-device LLM views) as a RecBole plugin.

Importing the package patches RecBole 1.2.1 for today's numpy/torch (``compat``) and makes RecBole's
name lookups find the plugin's models (``registry``), in every process that imports it: Ray workers too.
"""
from recbole_lumos import compat

compat.apply()

from recbole_lumos import registry  # noqa: E402  (after the patches)

registry.install()

from recbole_lumos.registry import federate, register_model  # noqa: E402,F401  (the public API of extending)

__version__ = "0.2.0"
