"""Find a model, its dataset class and its trainer: in the plugin first, then among RecBole's own classes.

RecBole looks classes up by name inside ``recbole.*`` only. ``install()`` teaches RecBole's own entry points
(``Config``, ``create_dataset``, ``get_trainer``, ``load_data_and_model``) the plugin's classes too, so a saved
LUMOS checkpoint loads with RecBole's stock tools exactly like a SASRec one.
"""
import importlib
import sys

import recbole.config.configurator
import recbole.data.dataset
import recbole.trainer
import recbole.utils
import recbole.utils.utils

from recbole_lumos.errors import LumosError

_recbole_get_model = recbole.utils.utils.get_model
_recbole_get_trainer = recbole.utils.utils.get_trainer


def plugin_models():
    """{name: class} of the models this plugin adds."""
    from recbole_lumos.model import MODELS

    return dict(MODELS)


def recbole_sequential_models():
    module = importlib.import_module("recbole.model.sequential_recommender")
    return sorted(name for name in dir(module) if isinstance(getattr(module, name), type) and name[0].isupper())


def get_model(model_name):
    """The model class called ``model_name``: the plugin's first, then RecBole's."""
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
    models = plugin_models()
    if model_name in models:
        from recbole_lumos.trainer import FederatedTrainer

        return FederatedTrainer
    from recbole_lumos.resume import resumable

    return resumable(_recbole_get_trainer(model_type, model_name))


def install():
    """Make RecBole's name lookups see the plugin's classes (idempotent)."""
    from recbole_lumos.data.dataset import LUMOSDataset
    from recbole_lumos.trainer import FederatedTrainer

    # RecBole's quick_start imports ray at import time: patch it only if loaded (a later import binds the patched
    # recbole.utils functions anyway), so a run never needs Ray
    modules = [recbole.utils, recbole.utils.utils, recbole.config.configurator,
               sys.modules.get("recbole.quick_start.quick_start")]
    for module in filter(None, modules):
        if hasattr(module, "get_model"):
            module.get_model = get_model
        if hasattr(module, "get_trainer"):
            module.get_trainer = get_trainer
    # RecBole's create_dataset looks for "<Model>Dataset" in recbole.data.dataset
    for name in plugin_models():
        setattr(recbole.data.dataset, f"{name}Dataset", LUMOSDataset)
        setattr(recbole.trainer, f"{name}Trainer", FederatedTrainer)
