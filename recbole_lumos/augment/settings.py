"""Augmentation settings: a key from the run's config, else its default from properties/augment.yaml."""
import yaml

from recbole_lumos.paths import PROPERTIES

DEFAULTS = yaml.safe_load((PROPERTIES / "augment.yaml").read_text())


def setting(config, key):
    """`config` is a RecBole Config or a plain dict; a missing or null key falls back to augment.yaml."""
    value = config[key] if config is not None and key in config else None
    return DEFAULTS.get(key) if value is None else value


def view_seed(config):
    """The seed views are generated with: ``view_seed``, else the run's seed."""
    value = setting(config, "view_seed")
    return (config["seed"] or 0) if value is None else value
