"""Every plugin key is validated (type, range, allowed values) with one line; unknown keys are warned about."""
import logging

import pytest

from recbole_lumos import config_schema
from recbole_lumos.errors import LumosError
from recbole_lumos.quick_start import build_config
from tests.conftest import tiny_settings


def test_every_plugin_yaml_key_has_a_rule():
    """A key added to the plugin's yaml without a rule would go unchecked."""
    assert config_schema.plugin_keys() - config_schema.recbole_keys() <= set(config_schema.RULES)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"tri_temperature": 0}, "tri_temperature must be > 0, got 0"),
        ({"tri_weight": -0.1}, "tri_weight must be >= 0"),
        ({"tri_views": ["future", "sideways"]}, "tri_views must be a list of distinct names"),
        ({"tri_views": "future"}, "tri_views must be a list"),
        ({"client_fraction": 0.0}, "client_fraction must be in (0, 1]"),
        ({"client_fraction": 1.5}, "client_fraction must be in (0, 1]"),
        ({"views": "telepathy"}, "views must be one of llm, embedding, random"),
        ({"local_epochs": 0}, "local_epochs must be >= 1"),
        ({"local_learner": "lion"}, "local_learner must be one of sgd, adam"),
        ({"aggregator": "bulyan"}, "aggregator must be one of fedavg, median, trimmed_mean, krum"),
        ({"num_clients": 2.5}, "num_clients must be an integer"),
        ({"federated": "yes"}, "federated must be True or False"),
        ({"llm_dtype": "int4"}, "llm_dtype must be one of auto, float32, bfloat16, float16"),
        ({"view_window_items": 0}, "view_window_items must be"),
        ({"tri_views": ["future"], "tri_extra_negatives": 0}, "the tri-view loss has no negative"),
        ({"tri_views": ["counterfactual"]}, "has no positive view"),
        ({"tri_anchor_gradient": False, "tri_view_gradient": False}, "the tri-view loss would train nothing"),
    ],
)
def test_bad_plugin_values_are_one_line_errors(tiny_data, in_tmp, settings, message):
    with pytest.raises(LumosError) as error:
        build_config("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, **settings))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_edge_values_that_are_allowed(tiny_data, in_tmp):
    config = build_config("LUMOS", "tiny", config_dict=tiny_settings(
        tiny_data, client_fraction=1.0, tri_weight=0.0, tri_views=["future"], tri_extra_negatives=0, num_clients=None))
    assert config["client_fraction"] == 1.0 and config["tri_views"] == ["future"]


def test_a_misspelt_key_ends_the_run_naming_the_key_meant(tiny_data, in_tmp):
    with pytest.raises(LumosError, match="'epochz': did you mean 'epochs'"):
        build_config("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, epochz=3))
    with pytest.raises(LumosError, match="'tri_wieght': did you mean 'tri_weight'"):
        build_config("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, tri_wieght=0.1))


def test_an_unknown_key_not_close_to_a_known_one_is_warned_about_and_kept(tiny_data, in_tmp, caplog):
    caplog.set_level(logging.WARNING)
    config = build_config("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, my_loss_weight=3))
    warnings = [r.getMessage() for r in caplog.records if "unknown setting" in r.getMessage()]
    assert warnings == ["unknown setting 'my_loss_weight' (the nearest known key is 'ls_weight'): passed on as it is, "
                        "for a model that reads it."]
    assert config["my_loss_weight"] == 3


def test_a_future_loss_with_random_views_is_refused():
    from recbole_lumos.config_schema import validate

    with pytest.raises(LumosError, match="random views append none"):
        validate({"future_weight": 0.5, "views": "random"})
