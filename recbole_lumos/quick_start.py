"""config -> dataset -> model -> trainer -> results: RecBole's run_recbole, with the plugin's defaults and lookup.

Config precedence is RecBole's: RecBole's built-in yaml < the plugin's ``properties/`` (overall, model, dataset)
< ``--config_files`` < ``config_dict`` (the command line's ``--key=value``, a Ray Tune trial's sample).
"""
import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from logging import getLogger

import recbole
import torch
import yaml
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_lumos import config_schema, paths, registry
from recbole_lumos.data.atomic import check_loaded_columns, ensure_dataset
from recbole_lumos.errors import LumosError
from recbole_lumos.significance import evaluate_per_user, save_per_user

PROPERTIES = str(paths.PROPERTIES)
REPORTED_METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20", "er@10", "er@20")  # ER: under an attack only
PRINTED_NAMES = {"hit": "HR", "ndcg": "NDCG", "er": "ER"}
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16")  # what sets CPU speed


def default_config_files(model_name, dataset_name):
    """The plugin's yaml files that apply to this model and dataset, lowest precedence first."""
    names = ["overall.yaml", f"model/{model_name}.yaml", f"dataset/{dataset_name}.yaml"]
    model_class = registry.plugin_models().get(model_name)
    base = getattr(model_class, "federated_from", None)
    if base is not None:  # federate()'s models: FedSASRec's settings, then the model's own RecBole yaml over them
        names[1:1] = ["augment.yaml", "model/LUMOS.yaml", "model/FedSASRec.yaml", recbole_model_yaml(base.__name__)]
    elif model_class is not None:  # the LUMOS family shares one base file
        names[1:1] = ["augment.yaml", "model/LUMOS.yaml"] if model_name != "LUMOS" else ["augment.yaml"]
    paths = [os.path.join(PROPERTIES, name) for name in names]  # (an absolute name stays as it is)
    return [path for path in paths if os.path.isfile(path)]


def recbole_model_yaml(model_name):
    """RecBole's own defaults of a model (RecBole reads them by the class name: none for the plugin's models)."""
    return os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model_name}.yaml")


def _load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise LumosError(f"Config file {path} is not valid yaml ({str(e).splitlines()[0]}): fix its syntax") from None


@contextmanager
def _argv_hidden():
    """RecBole parses every --key=value in sys.argv; the CLI hands them over as config_dict instead."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _check_types(user_settings, defaults):
    """A value given on the command line must have the type of its default: --learning_rate=abc is refused."""
    for key, value in user_settings.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        numbers = (int, float)
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(default, bool) == isinstance(value, bool)
        elif isinstance(default, numbers):
            ok = isinstance(value, numbers) and not (isinstance(default, int) and isinstance(value, float))
        else:
            ok = isinstance(value, type(default)) or (isinstance(default, (list, dict))
                                                      and isinstance(value, (list, dict)))
        if not ok:
            raise LumosError(
                f"Config key '{key}' expects a {type(default).__name__} like its default {default!r}, "
                f"got {value!r}: fix --{key}=..."
            )


def _check_settings(config):
    """Settings RecBole would accept and then crash on much later."""
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if not topk or any(not isinstance(k, int) or k < 1 for k in topk):
        raise LumosError(f"topk must be positive integers, got {config['topk']!r}")
    metric, _, k = str(config["valid_metric"]).partition("@")
    if metric.lower() not in [m.lower() for m in config["metrics"]] or (k and int(k) not in topk):
        raise LumosError(
            f"valid_metric {config['valid_metric']} is not among metrics {config['metrics']} at topk {topk}: "
            "add it to metrics/topk or choose another valid_metric"
        )
    for key in ("epochs", "eval_step", "train_batch_size", "eval_batch_size", "MAX_ITEM_LIST_LENGTH"):
        if config[key] is not None and config[key] < 1:
            raise LumosError(f"{key} must be at least 1, got {config[key]}")
    if config["learning_rate"] is not None and config["learning_rate"] <= 0:
        raise LumosError(f"learning_rate must be positive, got {config['learning_rate']}")


def build_config(model, dataset, config_file_list=None, config_dict=None):
    """A RecBole Config for any model (plugin or RecBole) with the plugin's defaults; bad input -> LumosError."""
    registry.install()
    model_class = registry.get_model(model)
    config_dict = dict(config_dict or {})
    user_keys = set(config_dict)
    user_files = list(config_file_list or [])
    for path in user_files:
        if not os.path.isfile(path):
            raise LumosError(f"Config file {path} does not exist: check the --config_files path")
    recbole_defaults = recbole_model_yaml(model)
    defaults = _load_yaml(recbole_defaults) if os.path.isfile(recbole_defaults) else {}
    for path in default_config_files(model, dataset):
        defaults.update(_load_yaml(path))
    user_file_settings = {}
    for path in user_files:
        user_file_settings.update(_load_yaml(path))
    # RecBole refuses negative sampling with a CE loss, and samples by default: switch it off for CE models
    loss_type = {**defaults, **user_file_settings, **config_dict}.get("loss_type")
    if loss_type == "CE" and "train_neg_sample_args" not in {**user_file_settings, **config_dict}:
        config_dict["train_neg_sample_args"] = None

    data_path = (config_dict.get("data_path") or user_file_settings.get("data_path")
                 or os.path.join(os.getcwd(), "dataset"))
    config_dict["data_path"] = os.path.abspath(data_path)
    raw_data_path = config_dict.get("raw_data_path") or user_file_settings.get("raw_data_path")
    ensure_dataset(dataset, config_dict["data_path"], show_progress=True, raw_data_path=raw_data_path)

    try:
        with _argv_hidden():
            config = Config(
                model=model_class,
                dataset=dataset,
                config_file_list=default_config_files(model, dataset) + user_files,
                config_dict=config_dict,
            )
    except (ValueError, TypeError, KeyError) as e:  # RecBole's own checks of the settings
        raise LumosError(f"Invalid setting: {str(e).splitlines()[0]}") from None
    # RecBole's own model yaml is loaded after the model class is known; user keys are checked against it too
    config_schema.check_unknown(user_keys | set(user_file_settings))
    config_schema.validate(config)  # the plugin's keys, by their rules
    _check_types(config.variable_config_dict, {**config.internal_config_dict, **defaults})  # RecBole's, by default
    _check_settings(config)
    check_loaded_columns(config["data_path"], dataset, config["load_col"])
    return config


def format_metrics(result):
    """'HR@10 0.1234  HR@20 ...' in the order of REPORTED_METRICS (only those present)."""
    parts = []
    for name in REPORTED_METRICS:
        if name in result:
            metric, k = name.split("@")
            parts.append(f"{PRINTED_NAMES[metric]}@{k} {result[name]:.4f}")
    return "  ".join(parts)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def write_result_file(config, result):
    """results/<dataset>/<model>-seed<seed>-<time>.json; written whole or not at all."""
    folder = os.path.join(config["results_dir"] or os.path.join(os.getcwd(), "results"), config["dataset"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{config['model']}-seed{config['seed']}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    record = dict(result, config={k: _jsonable(v) for k, v in config.final_config_dict.items()})
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(path + ".tmp", path)
    return path


def cpu_class(cpuinfo="/proc/cpuinfo"):
    """The CPU a run's figures come from: its name, family and model, the SIMD flags that set its speed (and bf16's
    numerics) and the kernels torch picked. A timing from one class is no promise for another."""
    fields = {}
    if os.path.isfile(cpuinfo):
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block stands for all
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or platform.machine()
    family = f" family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    flags = [flag for flag in SIMD_FLAGS if flag in fields.get("flags", "").split()]
    return f"{name}{family} ({', '.join(flags) or 'flags unknown'}; torch {torch.backends.cpu.get_cpu_capability()})"


def peak_memory_mb():
    """This process's peak resident memory (or GPU allocation, if larger), in MB. On Linux from VmHWM, the high-water
    mark of this process's own address space: ru_maxrss carries a parent's peak over fork + exec (a benchmark
    that generated views would pass its 2.5 GB on to every run it starts)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    if os.path.isfile("/proc/self/status"):
        with open("/proc/self/status", encoding="utf-8") as f:
            peak = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), peak)
    if torch.cuda.is_available():
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
    return round(peak, 1)


def prepare_views(model, dataset, config_file_list=None, config_dict=None):
    """Generate (or find cached) the views a run of ``model`` will use, so parallel runs or trials only read them.

    Returns the generator's name and statistics, or None when the model trains without views.
    """
    config = build_config(model, dataset, config_file_list, config_dict)
    model_class = registry.get_model(config["model"])
    if not getattr(model_class, "needs_views", lambda c: False)(config) or config["views"] == "random":
        return None  # random views cost nothing and are not cached
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    from recbole_lumos.federated.client import Clients

    # the run's own client side builds them: the same histories (noisy, fake clients included), the same cache keys
    model_obj = model_class(config, train_data._dataset)
    views = Clients(config, model_obj, train_data._dataset, getLogger()).views
    return {"views": views.name, **views.stats()}


def view_set(trainer):
    """{"kind", "key"} of the views a run trained on, so that two rows are known to read the same ones: the LLM
    views' cache key (``augment/cache.py``), a digest of what places the embedding views; random views (drawn
    afresh every round) have no key. kind "none": the run trained without views. A key that cannot be read (a
    wrapper that does not keep its generator) is None: unknown, never guessed."""
    from recbole_lumos.augment.cache import cache_key

    builder = getattr(getattr(trainer, "clients", None), "views", None)
    if builder is None:
        return {"kind": "none", "key": None}
    while getattr(builder, "base", None) is not None:  # aligned prefixes, perturbations: the views they move
        builder = builder.base
    kind, key = builder.name.split("+")[0], None
    if hasattr(builder, "cache") and "+" not in builder.name:
        key = builder.cache().key
    elif kind == "embedding" and "+" not in builder.name:
        key = cache_key(kind=kind, catalogue=builder.catalogue.texts, shape=vars(builder.shape),
                        encoder=str(getattr(builder.encoder, "path", None) or "all-MiniLM-L6-v2"),
                        recency_decay=builder.recency_decay, seed=builder.seed)
    return {"kind": kind, "key": key}


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, callback_fn=None):
    """Train and evaluate one model; returns the result dict that is also written to the result file."""
    started = time.time()
    config = build_config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)

    init_seed(config["seed"], config["reproducibility"])
    model_obj = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    trainer.run_started = started  # a resumable trainer counts time (and resumes its clock) from the run's start

    valid_curve = []  # (seconds since start, epoch or round, valid score) at each validation: for the plots

    def on_validation(epoch_idx, valid_score):
        valid_curve.append((round(time.time() - started, 2), epoch_idx + 1, valid_score))
        if callback_fn:
            callback_fn(epoch_idx, valid_score)

    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=on_validation
        )
    except ValueError as e:  # RecBole's own trainer stops a NaN loss with a bare ValueError
        if "nan" not in str(e):
            raise
        raise LumosError(f"training diverged ({e}): the learning rate is likely too high "
                         f"(learning_rate {config['learning_rate']}): lower it") from None
    test_result, test_per_user = evaluate_per_user(trainer, test_data, load_best_model=saved,
                                                   show_progress=config["show_progress"])

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "best_valid_score": best_valid_score,
        "best_valid_result": dict(best_valid_result),
        "test_result": dict(test_result),
        "wall_time_s": round(time.time() - trainer.run_started, 1),  # a resumed run's: earlier sessions too
        "time_to_best_s": round(getattr(trainer, "time_to_best", float("nan")), 1),
        "peak_memory_mb": peak_memory_mb(),
        "checkpoint": trainer.saved_model_file if saved else None,
        "device": str(config["device"]),
        "versions": f"RecBole {recbole.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}, "
                    f"{os.cpu_count()} CPUs: {cpu_class()}"
                    + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "valid_curve": getattr(trainer, "valid_curve", valid_curve),  # a resumable trainer keeps it across sessions
        "views": view_set(trainer),
    }
    privacy = getattr(trainer, "privacy", lambda: None)()
    if privacy is not None:  # DP-FedAvg: the (epsilon, delta) the run spent goes with its numbers
        result["privacy"] = privacy
    if getattr(trainer, "diagnostics", None):
        result["diagnostics"] = trainer.diagnostics
    result["result_file"] = write_result_file(config, result)
    save_per_user(result["result_file"], test_per_user)  # what a paired test against another run compares
    logger.info(set_color("best valid ", "yellow") + f": {format_metrics(result['best_valid_result'])}")
    logger.info(set_color("test result", "yellow") + f": {format_metrics(result['test_result'])}")
    if privacy is not None:
        logger.info(set_color("privacy", "yellow") + f": epsilon {privacy['epsilon']:.4g} "
                    f"at delta {privacy['delta']:.3g} "
                    f"after {privacy['rounds']} rounds (noise multiplier {privacy['noise_multiplier']}, "
                    f"clip norm {privacy['clip_norm']}, sampling rate {privacy['sample_rate']})")
    return result
