"""Every plugin key with its rule (type, range or allowed values), checked once the Config is built.

A bad value ends the run with one line (``LumosError``). A key nobody knows (neither RecBole's yaml nor the
plugin's) that is close to a known one is a typo, which RecBole would silently replace by the default: it ends the
run too, naming the key meant. A key close to none is warned about and passed on (a user model's own key).
Add a key to the plugin's yaml AND here: ``tests/test_config_schema.py`` checks that every plugin yaml key has a
rule.
"""
import difflib
import glob
import os
from dataclasses import dataclass
from functools import lru_cache
from logging import getLogger

import recbole
import yaml

from recbole_lumos import paths
from recbole_lumos.augment import VIEW_KINDS
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import AGGREGATORS
from recbole_lumos.federated.attacks import ATTACKS
from recbole_lumos.model.lumos import VIEW_NAMES

# set by RecBole itself, or read by the CLI's modes, rather than written in any yaml
RUNTIME_KEYS = {"model", "dataset", "config_files", "MODEL_TYPE", "MODEL_INPUT_TYPE", "device", "eval_type",
                "local_rank", "single_spec", "valid_neg_sample_args", "test_neg_sample_args"}
_TYPES = {int: "an integer", float: "a number", bool: "True or False", str: "a string", list: "a list"}


@dataclass(frozen=True)
class Rule:
    kind: type  # int, float (ints accepted), bool, str, list
    check: object = None  # value -> bool
    requirement: str = ""  # what check demands, for the message
    optional: bool = False  # ~ (None) allowed

    def problem(self, value):
        if value is None:
            return None if self.optional else "must be set (it has no default)"
        ok_type = not isinstance(value, bool) if self.kind in (int, float) else True
        ok_type = ok_type and isinstance(value, (int, float) if self.kind is float else self.kind)
        if not ok_type:
            return f"must be {_TYPES[self.kind]}" + (f" {self.requirement}" if self.requirement else "")
        if self.check is not None and not self.check(value):
            return f"must be {self.requirement}"
        return None


def choice(*allowed, optional=False):
    return Rule(str, lambda v: v in allowed, f"one of {', '.join(allowed)}", optional)


def at_least(low, kind=int, optional=False):
    return Rule(kind, lambda v: v >= low, f">= {low}", optional)


def positive(kind=float):
    return Rule(kind, lambda v: v > 0, "> 0")


def between(low, high, low_open=False):
    return Rule(float, lambda v: (low < v if low_open else low <= v) and v <= high,
                f"in {'(' if low_open else '['}{low}, {high}]")


TEXT, OPTIONAL_TEXT, FLAG = Rule(str), Rule(str, optional=True), Rule(bool)

RULES = {
    # the tri-view loss (model/LUMOS.yaml)
    "tri_weight": at_least(0, float),
    "tri_temperature": positive(),
    "tri_views": Rule(list, lambda v: set(v) <= set(VIEW_NAMES) and len(set(v)) == len(v),
                      f"a list of distinct names among {', '.join(VIEW_NAMES)}"),
    "tri_extra_negatives": at_least(0),
    "tri_head": choice("private", "shared", "identity"),
    "tri_anchor": choice("history", "prefix", "aligned_prefix"),
    "tri_anchor_gradient": FLAG,
    "tri_view_gradient": FLAG,
    "fast_views": FLAG,
    "share_negatives": FLAG,
    "future_weight": at_least(0, float),
    "views": choice(*VIEW_KINDS),
    # CL4SRec's contrastive loss (model/CL4SRec.yaml, FedCL4SRec.yaml)
    "cl_weight": at_least(0, float),
    "cl_temperature": positive(),
    "cl_similarity": choice("dot", "cos"),
    "crop_eta": between(0, 1, low_open=True),
    "mask_gamma": between(0, 1),
    "reorder_beta": between(0, 1),
    # federation
    "federated": FLAG,
    "num_clients": at_least(1, optional=True),
    "client_partition": choice("iid", "dirichlet"),
    "dirichlet_alpha": positive(),
    "dirichlet_field": OPTIONAL_TEXT,
    "client_fraction": between(0, 1, low_open=True),
    "engine": choice("inprocess", "flower"),
    "flower_client_cpus": positive(float),
    "flower_client_gpus": at_least(0.0, float),
    "local_epochs": at_least(1),
    "local_learner": choice("sgd", "adam"),
    "local_learning_rate": positive(),
    "aggregator": choice(*AGGREGATORS),
    "sum_cohort_updates": FLAG,
    "cohort_size": at_least(1),
    "checkpoint_step": at_least(1, optional=True),
    "valid_smoothing": at_least(1),
    # robust aggregation, DP-FedAvg, noisy and malicious clients
    "trim_ratio": Rule(float, lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "krum_byzantine": at_least(0),
    "krum_selected": at_least(1),
    "clip_norm": positive(),
    "dp_noise_multiplier": positive(),
    "dp_delta": Rule(float, lambda v: 0 < v < 1, "in (0, 1)", optional=True),
    "dp_epsilon": Rule(float, lambda v: v > 0, "> 0", optional=True),
    "noise_ratio": between(0, 1),
    "attack": choice(*ATTACKS),
    "attack_fraction": at_least(0, float),
    "attack_target": Rule(list, lambda v: len(v) > 0, "a non-empty list of item ids", optional=True),
    "attack_mode": choice("data", "model"),
    "attack_boost": positive(),
    "report_exposure": FLAG,
    # view generation (augment.yaml)
    "views_fallback": FLAG,
    "views_perturb": FLAG,
    "view_seed": at_least(0, optional=True),
    "view_future_items": at_least(0),
    "view_swap_ratio": between(0, 1),
    "view_negative_items": at_least(1),
    "view_window_items": at_least(1),
    "view_recency_decay": between(0, 1, low_open=True),
    "item_title_field": OPTIONAL_TEXT,
    "item_year_field": OPTIONAL_TEXT,
    "item_genre_field": OPTIONAL_TEXT,
    "llm_model": TEXT,
    "llm_model_cache_dir": OPTIONAL_TEXT,
    "llm_prompts": OPTIONAL_TEXT,
    "llm_lora_path": OPTIONAL_TEXT,
    "llm_lora_finetune": FLAG,
    "llm_lora_steps": at_least(1),
    "llm_lora_rank": at_least(1),
    "llm_lora_lr": positive(),
    "llm_device": TEXT,
    "llm_dtype": choice("auto", "float32", "bfloat16", "float16"),
    "llm_int8": FLAG,
    "llm_batch_size": at_least(1),
    "llm_workers": at_least(1),
    "ray_address": OPTIONAL_TEXT,
    "llm_max_title_tokens": at_least(1),
    "llm_complete_titles": FLAG,
    "llm_shortlist": at_least(0),
    "llm_do_sample": FLAG,
    "llm_temperature": positive(),
    "embedding_model": OPTIONAL_TEXT,
    "views_cache_dir": OPTIONAL_TEXT,
    # overall.yaml
    "results_dir": OPTIONAL_TEXT,
    "raw_data_path": OPTIONAL_TEXT,
    "encoding": TEXT,
}


def _yaml_keys(pattern, skip=()):
    keys = set()
    for path in glob.glob(pattern, recursive=True):
        if not any(part in path for part in skip):
            with open(path, encoding="utf-8") as f:
                keys |= set(yaml.safe_load(f) or {})
    return keys


def plugin_keys():
    """The keys of the plugin's config yaml (not its benchmark plans, search spaces or prompts)."""
    return _yaml_keys(str(paths.PROPERTIES / "**" / "*.yaml"), skip=("search", "prompts", "plans", "benchmark.yaml"))


@lru_cache(maxsize=1)
def recbole_keys():
    """Every key of RecBole's own yaml (overall, dataset, every model's), and those it sets at run time."""
    recbole_properties = os.path.join(os.path.dirname(recbole.__file__), "properties")
    return _yaml_keys(os.path.join(recbole_properties, "**", "*.yaml"), skip=("url.yaml",)) | RUNTIME_KEYS


def known_keys():
    return recbole_keys() | plugin_keys() | set(RULES)


# difflib's ratio above which an unknown key is taken for a typo: 'epochz'/'epochs' 0.83, 'tri_wieght'/'tri_weight'
# 0.9; a model's own key shares less with the nearest known one ('my_loss_weight'/'ls_weight' 0.78)
TYPO_SIMILARITY = 0.8


def check_unknown(keys):
    """Raise LumosError for the first unknown key close to a known one (a typo); warn about the others."""
    known = known_keys()
    for key in sorted(set(keys) - known):
        typo_of = difflib.get_close_matches(key, known, n=1, cutoff=TYPO_SIMILARITY)
        if typo_of:
            raise LumosError(f"unknown setting '{key}': did you mean '{typo_of[0]}'? (RecBole would ignore it)")
        like = difflib.get_close_matches(key, known, n=1)
        hint = f"the nearest known key is '{like[0]}'" if like else "no known key is like it"
        getLogger().warning(f"unknown setting '{key}' ({hint}): passed on as it is, for a model that reads it.")


def validate(config):
    """Check every plugin key present in ``config`` and the rules between keys; raise LumosError at the first."""
    for key, rule in RULES.items():
        if key in config:
            problem = rule.problem(config[key])
            if problem:
                raise LumosError(f"{key} {problem}, got {config[key]!r}: fix --{key}=...")
    if "aggregator" in config and config["aggregator"] != "fedavg" and not config["federated"]:
        raise LumosError(f"aggregator {config['aggregator']} needs federated: True (a central run aggregates nothing)")
    if ("attack_mode" in config and config["attack"] != "none" and config["attack_mode"] == "model"
            and not config["federated"]):
        raise LumosError("attack_mode model sends crafted updates to a server: it needs federated: True "
                         "(or attack_mode data)")
    if "future_weight" in config and (config["future_weight"] or 0) > 0 and config["views"] == "random":
        raise LumosError(f"future_weight {config['future_weight']} > 0 reads the items a generator appends to F, and "
                         "random views append none: use views llm or embedding, or set future_weight=0")
    if "tri_weight" in config:
        check_tri_view_loss(config)


def check_tri_view_loss(config):
    """A tri-view loss that would be a constant (no positive view, no negative) or train nothing is an error:
    checked for every run, and by ``LUMOS`` itself for a model built outside the command line."""
    if config["tri_weight"] > 0:
        views = config["tri_views"] or []
        if not {"future", "rephrase"} & set(views):
            raise LumosError(
                f"tri_weight {config['tri_weight']} > 0 but tri_views {views} has no positive view (future or "
                "rephrase): the tri-view loss would be 0; add one, or set tri_weight=0"
            )
        if "counterfactual" not in views and config["tri_extra_negatives"] == 0:
            raise LumosError(
                "the tri-view loss has no negative (no counterfactual in tri_views and tri_extra_negatives=0): "
                "its softmax would be a constant 0; add counterfactual to tri_views or set tri_extra_negatives >= 1"
            )
        if all(key in config and config[key] is False for key in ("tri_anchor_gradient", "tri_view_gradient")):
            raise LumosError("tri_anchor_gradient and tri_view_gradient are both False: the tri-view loss would train "
                             "nothing; set one of them True, or tri_weight=0")
