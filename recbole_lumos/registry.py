"""Find a model, its dataset class and its trainer: in the plugin first, then among RecBole's own classes.

RecBole looks classes up by name inside ``recbole.*`` only. ``install()`` teaches RecBole's own entry points
(``Config``, ``create_dataset``, ``get_trainer``, ``load_data_and_model``) the plugin's classes too, so a saved
LUMOS checkpoint loads with RecBole's stock tools exactly like a SASRec one.

The plugin's models are a registry: ``register_model`` adds a model (the plugin's own LUMOS family, a user's
model with the client interface), ``federate`` a federated version of any RecBole sequential model
(``model/federate.py``). A user's module that registers models is imported on the first lookup when
``LUMOS_MODULES`` names it (comma-separated module names, importable from PYTHONPATH or the current folder):
    LUMOS_MODULES=my_models recbole-lumos -m FedGRU4Rec -d ml-100k
The variable reaches every process a run starts (benchmark workers), and a checkpoint of a registered model then
loads in a fresh process too.
"""
import importlib
import os
import sys

import recbole.config.configurator
import recbole.data.dataset
import recbole.trainer
import recbole.utils
import recbole.utils.utils

from recbole_lumos.errors import LumosError

_recbole_get_model = recbole.utils.utils.get_model
_recbole_get_trainer = recbole.utils.utils.get_trainer
_MODELS = {}  # name -> class: every model the plugin trains with its federated trainer
_installed = False
USER_MODULES = "LUMOS_MODULES"


def register_model(cls):
    """Make ``cls`` a plugin model: ``-m <its class name>``, RecBole's name lookups, the plugin's dataset class and
    federated trainer (so it needs the client interface of LUMOS: ``client_loss``, ``next_item_loss``,
    ``uses_views``...; ``federate`` adds it to a RecBole model). The name is the class's own: RecBole names a model
    by its class (``config["model"]``, checkpoints). Returns ``cls``, so it also works as a class decorator."""
    name = cls.__name__
    if _MODELS.get(name, cls) is not cls:
        raise LumosError(f"a model called '{name}' is registered already ({_MODELS[name].__module__}): "
                         "give yours another name")
    _MODELS[name] = cls
    if _installed:  # during install() the loop at its end does it (the trainer module may still be loading)
        _teach_recbole(name)
    return cls


def federate(model_class, name=None):
    """Register a federated version of a RecBole sequential model (CE loss): ``federate(GRU4Rec)`` -> FedGRU4Rec.
    Returns the new class; see ``recbole_lumos.model.federate``."""
    from recbole_lumos.model.federate import federate as build

    return build(model_class, name)


def import_user_modules():
    """Import the modules ``LUMOS_MODULES`` names (each once: Python caches them), which register their models."""
    modules = [m.strip() for m in os.environ.get(USER_MODULES, "").split(",") if m.strip()]
    if modules and os.getcwd() not in sys.path:  # the folder a run starts in, as ``python -m`` has it (last:
        sys.path.append(os.getcwd())  # shadows nothing)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise LumosError(f"{USER_MODULES} names '{module}', which cannot be imported ({e}): put it on "
                             "PYTHONPATH or in the folder the run starts in") from None


def _registered():
    import recbole_lumos.model  # noqa: F401  (registers the plugin's own models)

    return _MODELS


def plugin_models():
    """{name: class} of the models this plugin trains: its own and those registered (``LUMOS_MODULES`` imported)."""
    import_user_modules()
    return dict(_registered())


def recbole_sequential_models():
    module = importlib.import_module("recbole.model.sequential_recommender")
    return sorted(name for name in dir(module) if isinstance(getattr(module, name), type) and name[0].isupper())


def get_model(model_name):
    """The model class called ``model_name``: the plugin's first, then RecBole's."""
    models = _registered()
    if model_name not in models:
        models = plugin_models()
    if model_name in models:
        return models[model_name]
    try:
        return _recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        raise LumosError(
            f"Unknown model '{model_name}'. Plugin models: {', '.join(sorted(models))}; "
            f"RecBole sequential models: {', '.join(recbole_sequential_models())} (and RecBole's general models)"
        ) from None


def get_trainer(model_type, model_name):
    """The trainer class for ``model_name``: the plugin's federated trainer for its models, else RecBole's (made
    resumable where its ``fit`` is RecBole's standard loop)."""
    if model_name in _registered() or model_name in plugin_models():
        from recbole_lumos.trainer import FederatedTrainer

        return FederatedTrainer
    from recbole_lumos.resume import resumable

    return resumable(_recbole_get_trainer(model_type, model_name))


def _teach_recbole(name):
    """RecBole's create_dataset looks for "<Model>Dataset" in recbole.data.dataset, its get_trainer for
    "<Model>Trainer" in recbole.trainer."""
    from recbole_lumos.data.dataset import LUMOSDataset
    from recbole_lumos.trainer import FederatedTrainer

    setattr(recbole.data.dataset, f"{name}Dataset", LUMOSDataset)
    setattr(recbole.trainer, f"{name}Trainer", FederatedTrainer)


def install():
    """Make RecBole's name lookups see the plugin's classes (idempotent)."""
    global _installed
    import recbole_lumos.trainer  # noqa: F401  (loads the plugin's models on the way)

    # RecBole's quick_start imports ray at import time: patch it only if loaded (a later import binds the patched
    # recbole.utils functions anyway), so a run never needs Ray
    modules = [recbole.utils, recbole.utils.utils, recbole.config.configurator,
               sys.modules.get("recbole.quick_start.quick_start")]
    for module in filter(None, modules):
        if hasattr(module, "get_model"):
            module.get_model = get_model
        if hasattr(module, "get_trainer"):
            module.get_trainer = get_trainer
    _installed = True
    for name in _registered():
        _teach_recbole(name)
