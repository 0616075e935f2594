"""RecBole 1.2.1 on numpy 2, torch >= 2.6, pandas 2 and a current Ray.

``apply()`` runs when ``recbole_lumos`` is imported, so every process that imports the package (the CLI, tests,
Ray Tune workers) is patched before RecBole builds its first ``Config``. It is idempotent.

  1. numpy 2 removed ``np.float_``/``np.complex_``/``np.unicode_``, which ``Config.compatibility_settings`` and
     RecBole's metrics read: restore them as aliases.
  2. torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints pickle the whole Config. Only calls
     made FROM RecBole's own modules get ``weights_only=False`` (their files are RecBole's own checkpoints);
     every other caller keeps torch's safe default.
  3/4. pandas 3 breaks RecBole's Dataset (copy-on-write ``fillna(inplace=True)``, ``Series.agg(len)``):
     setup.py pins ``pandas<3``; ``apply()`` refuses to run on pandas 3 with a one-line error.
  5. ``recbole.model.sequential_recommender.sine`` switches autograd anomaly mode on at import (25-30 % slower
     training): import it now, then switch it off again.
  6. RecBole's metadata pins ``ray<=2.6.3``, which pip installs with it and which cannot import on numpy 2 and
     setuptools >= 81. Nothing runs Ray until ``--tune`` or ``llm_workers``, which call ``require_ray()`` first:
     one line says how to install a current Ray. RecBole's own ``hyper_tuning`` is not used.
  7. ``recbole.utils.ensure_dir`` checks, then creates: two runs starting together (benchmark workers, Tune
     trials) race on ``log/<Model>`` and one dies with FileExistsError. Replace it with ``makedirs(exist_ok=True)``
     in every module that imported it.
"""
import functools
import os
import sys

import numpy as np
import pandas as pd
import torch

from recbole_lumos.errors import LumosError

_applied = False
MIN_RAY = (2, 40)


def require_ray(purpose):
    """Ray, new enough for ``purpose`` (the pinned 2.6.3 that pip installs with RecBole fails on import)."""
    try:
        import ray

        found = ray.__version__
        recent = tuple(int(part) for part in found.split(".")[:2]) >= MIN_RAY
    except Exception as e:  # noqa: BLE001  (2.6.3: pkg_resources missing, np.bool8 removed)
        found, recent = f"one that fails on import: {type(e).__name__}", False
    if not recent:
        raise LumosError(f"{purpose} needs Ray >= {'.'.join(map(str, MIN_RAY))} (found {found}): "
                         f"pip install \"ray[tune]>={'.'.join(map(str, MIN_RAY))}\" (pip then warns that recbole "
                         "1.2.1 asks for ray<=2.6.3: that pin is stale, and the warning is expected)")


def _restore_numpy_aliases():
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, alias):
            setattr(np, alias, target)
    # RecBole's metrics use np.float etc., which only Config() defines (compatibility_settings): a model reloaded
    # with load_data_and_model (a pickled Config) and then evaluated would fail without them
    for alias, target in (("float", float), ("int", int), ("bool", np.bool_), ("complex", complex), ("object", object)):
        if alias not in np.__dict__:  # not hasattr: numpy warns on reading a removed alias
            setattr(np, alias, target)


def _recbole_torch_load(original):
    @functools.wraps(original)
    def load(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("recbole.") and "weights_only" not in kwargs:
            kwargs["weights_only"] = False  # RecBole's own checkpoints, written by RecBole
        return original(*args, **kwargs)

    load.recbole_lumos_patched = True
    return load


def _check_pandas():
    if int(pd.__version__.split(".")[0]) >= 3:
        raise LumosError(
            f"pandas {pd.__version__} breaks RecBole 1.2.1's Dataset; install pandas 2: pip install 'pandas>=2.2,<3'"
        )


def _silence_anomaly_mode():
    import recbole.model.sequential_recommender  # noqa: F401  (runs sine.py, which turns anomaly mode on)

    torch.autograd.set_detect_anomaly(False)


def _race_free_ensure_dir():
    import importlib

    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    for name in ("recbole.utils", "recbole.utils.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.utils", "recbole.data.dataset.dataset"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


def apply():
    global _applied
    if _applied:
        return
    _restore_numpy_aliases()
    if not getattr(torch.load, "recbole_lumos_patched", False):
        torch.load = _recbole_torch_load(torch.load)
    _check_pandas()
    _silence_anomaly_mode()
    _race_free_ensure_dir()
    _applied = True
