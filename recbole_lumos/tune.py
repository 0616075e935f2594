"""Ray Tune search over any model (the plugin's or RecBole's), scheduled by ASHA on validation NDCG@20.

    python run_lumos.py --tune --model=LUMOS --dataset=ml-100k --num_samples=16

The search space is ``properties/search/<Model>.yaml`` (or ``--search_space=file``): under ``space``, each key
maps to one of ``{choice: [..]}``, ``{uniform: [low, high]}``, ``{loguniform: [low, high]}``, ``{grid: [..]}``;
under ``tune``, the search's own settings (num_samples, cpus_per_trial, gpus_per_trial, max_concurrent_trials,
grace_period, reduction_factor, defaults_first); under ``derived``, keys set from a searched one in every trial,
``{times: [key, factor]}`` (``inner_size: {times: [hidden_size, 4]}``: the feed-forward width follows the hidden
size), unless the command line fixes them. With ``defaults_first`` (on unless set False) the first of the
num_samples trials is the model's own defaults (its yaml, the config files and the command line) for every
searched key but grid ones, so the winner is chosen against the defaults too (ASHA may still stop that trial
early, like any other). Any ``--key=value`` that is one of those sets it; any other fixes that config
key for every trial (and takes it out of the space). Each validation (a round, or an epoch) is reported to ASHA,
which stops the weaker trials early. Generated views are built once before the trials, which then share them.
Outputs, in ``<output_dir>`` (default ``results/tune/<Model>-<dataset>``): ``trials.csv``, ``trials.md``,
``best.yaml``, a config file for ``run_lumos.py --config_files=...``, and ``search.png``: each trial's best
validation NDCG@20 in the order the trials started, with the best so far, to show whether the budget sufficed.
"""
import os
import shutil
import tempfile
import time

import yaml

from recbole_lumos import paths, registry
from recbole_lumos.allocator import MALLOC_ENV
from recbole_lumos.compat import require_ray
from recbole_lumos.errors import LumosError
from recbole_lumos.quick_start import PROPERTIES, REPORTED_METRICS, build_config, prepare_views

METRIC = "valid_ndcg@20"
VALIDATION = "validation"  # the n-th validation of a trial, ASHA's clock
SEARCH_SETTINGS = {"num_samples": 16, "cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": None,
                   "grace_period": 2, "reduction_factor": 2, "defaults_first": True}
SAMPLERS = ("choice", "uniform", "loguniform", "grid")


def load_search_space(path):
    """{key: a Ray Tune domain}, {search setting: value}, {derived key: (searched key, factor)} from a search-space
    yaml."""
    from ray import tune

    if not os.path.isfile(path):
        raise LumosError(f"Search space {path} does not exist: write one (see properties/search/) "
                         "or pass --search_space")
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f) or {}
    space = {}
    for key, domain in (spec.get("space") or {}).items():
        if not (isinstance(domain, dict) and len(domain) == 1 and next(iter(domain)) in SAMPLERS):
            raise LumosError(f"{path}: '{key}' must be one of {{{', '.join(f'{s}: [...]' for s in SAMPLERS)}}}")
        sampler, values = next(iter(domain.items()))
        if not isinstance(values, list) or not values or (sampler in ("uniform", "loguniform") and len(values) != 2):
            raise LumosError(f"{path}: '{key}: {sampler}' needs a list of values ([low, high] for {sampler})")
        if sampler in ("choice", "grid"):
            space[key] = tune.choice(values) if sampler == "choice" else tune.grid_search(values)
        else:
            space[key] = getattr(tune, sampler)(*values)
    unknown = set(spec.get("tune") or {}) - set(SEARCH_SETTINGS)
    if unknown:
        raise LumosError(f"{path}: unknown tune setting(s) {', '.join(sorted(unknown))}: "
                         f"use {', '.join(SEARCH_SETTINGS)}")
    derived = {}
    for key, rule in (spec.get("derived") or {}).items():
        times = rule.get("times") if isinstance(rule, dict) and len(rule) == 1 else None
        source, factor = times if isinstance(times, list) and len(times) == 2 else (None, None)
        if source not in space or isinstance(factor, bool) or not isinstance(factor, (int, float)) or key in space:
            raise LumosError(f"{path}: derived '{key}' must be {{times: [a searched key, a number]}} "
                             "and not searched itself")
        derived[key] = (source, factor)
    return space, {**SEARCH_SETTINGS, **(spec.get("tune") or {})}, derived


def derive(derived, settings):
    """{derived key: its value} from the searched keys' values in ``settings`` (a trial's, or the best one's)."""
    return {key: settings[source] * factor for key, (source, factor) in derived.items() if source in settings}


def default_point(space, config):
    """{searched key: the value the run would have without the search}: a grid key is left out (Ray expands
    the point over the grid), and so is a key the config does not hold."""
    grid = {key for key, domain in space.items() if isinstance(domain, dict) and "grid_search" in domain}
    return {key: config[key] for key in space if key not in grid and config[key] is not None}


def trainable(trial_config, model, dataset, config_files, fixed, search_dir, eval_step, derived=None):
    """One trial: a normal run whose every validation is reported to Tune (ASHA may stop it there).

    Its checkpoints live in the trial's folder under ``search_dir`` (Ray's own trial folder is a temporary one
    that a restored search does not see again), so a search restored after a kill resumes each unfinished trial
    from its last validation instead of starting it over."""
    import recbole_lumos  # noqa: F401  (a Ray worker is a fresh interpreter: patch RecBole there too)
    from ray import tune

    from recbole_lumos.quick_start import run

    trial_dir = os.path.join(search_dir, os.path.basename(tune.get_context().get_trial_dir()))
    settings = {**fixed, **trial_config}
    settings.update(derive(derived or {}, settings), checkpoint_dir=os.path.join(trial_dir, "saved"),
                    results_dir=os.path.join(trial_dir, "results"), show_progress=False)

    def report(epoch_idx, valid_score):
        # ASHA counts validations, not Ray's reports: those start again at 1 when a restored trial resumes
        tune.report({METRIC: valid_score, "epoch": epoch_idx + 1, VALIDATION: (epoch_idx + 1) // eval_step})

    result = run(model, dataset, config_file_list=config_files, config_dict=settings, callback_fn=report)
    # the first validation with the curve's highest score (a resumed trial's curve holds every session's); where a
    # trainer selects on a smoothed curve (valid_smoothing) its checkpoint may be a neighbouring validation
    best_epoch = max(result["valid_curve"], key=lambda point: point[2])[1] if result["valid_curve"] else 0
    tune.report({METRIC: result["best_valid_score"], VALIDATION: best_epoch // eval_step, "final": True,
                 "wall_time_s": result["wall_time_s"],
                 **{f"test_{m}": v for m, v in result["test_result"].items() if m in REPORTED_METRICS}})


def tune(model, dataset, config_files, settings):
    """Run the search; writes trials.csv / trials.md / best.yaml / search.png and returns the best trial's config."""
    require_ray("--tune")
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    registry.get_model(model)  # an unknown model is named as such, before its search space is looked for
    settings = dict(settings)
    restore = settings.pop("restore", None)  # an interrupted search's folder: finish it (failed trials rerun)
    space_file = settings.pop("search_space", os.path.join(PROPERTIES, "search", f"{model}.yaml"))
    output_dir = os.path.abspath(settings.pop("output_dir", os.path.join("results", "tune", f"{model}-{dataset}")))
    space, search, derived = load_search_space(space_file)
    for key in SEARCH_SETTINGS:
        if key in settings:
            search[key] = settings.pop(key)
    if not isinstance(search["num_samples"], int) or search["num_samples"] < 1:
        raise LumosError(f"num_samples must be a positive integer, got {search['num_samples']!r}")
    for key in settings:  # a key fixed on the command line is no longer searched (nor derived)
        space.pop(key, None)
        derived.pop(key, None)
    config_files = [os.path.abspath(path) for path in config_files]
    # Trials run in their own folders: the data path must not depend on the working directory
    base = build_config(model, dataset, config_files, settings)
    settings["data_path"] = os.path.dirname(os.path.abspath(base["data_path"]))  # RecBole appended the dataset

    first = [default_point(space, base)] if search["defaults_first"] else []
    max_t = max(1, base["epochs"] // base["eval_step"])
    grace = max(1, min(int(search["grace_period"]), max_t))
    views = prepare_views(model, dataset, config_files, settings)  # built once: trials read the cache
    if views:
        print(f"views ready for every trial: {views.get('views')}")

    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 bytes
    # trials run in their own folders: the package, the folder the search started in (a user's LUMOS_MODULES)
    python_path = os.pathsep.join(filter(None, [str(paths.IMPORT_ROOT), os.getcwd(), os.environ.get("PYTHONPATH")]))
    user_modules = {"LUMOS_MODULES": os.environ["LUMOS_MODULES"]} if os.environ.get("LUMOS_MODULES") else {}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
             runtime_env={"env_vars": {"PYTHONPATH": python_path, **user_modules, **MALLOC_ENV}})
    try:
        resources = {"cpu": search["cpus_per_trial"], "gpu": search["gpus_per_trial"]}
        name = f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        search_dir = os.path.abspath(restore) if restore else os.path.join(output_dir, "ray", name)
        runner = ray_tune.with_parameters(ray_tune.with_resources(trainable, resources), model=model,
                                          dataset=dataset, config_files=config_files, fixed=settings,
                                          search_dir=search_dir, eval_step=base["eval_step"], derived=derived)
        if restore:
            tuner = ray_tune.Tuner.restore(search_dir, trainable=runner, restart_errored=True)
        else:
            print(f"search folder: {search_dir} (interrupted? add --restore=<that folder>)")
            tuner = ray_tune.Tuner(
                runner,
                param_space=space,
                tune_config=ray_tune.TuneConfig(
                    metric=METRIC, mode="max", num_samples=search["num_samples"],
                    # the defaults trial counts as one of num_samples; the generator itself keeps the limit on
                    # trials at once (Ray ignores TuneConfig's max_concurrent_trials beside a generator)
                    search_alg=BasicVariantGenerator(points_to_evaluate=first,
                                                     max_concurrent=search["max_concurrent_trials"] or 0),
                    scheduler=ASHAScheduler(time_attr=VALIDATION, max_t=max_t + 1, grace_period=grace,
                                            reduction_factor=search["reduction_factor"]),
                ),
                run_config=ray_tune.RunConfig(name=name, storage_path=os.path.join(output_dir, "ray"), verbose=1),
            )
        grid = tuner.fit()
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return write_outputs(grid, space, settings, output_dir, model, dataset, ran_defaults(grid, first), derived)


def ran_defaults(grid, first):
    """``first`` (the defaults point, in a list) where the search's first trial ran it, else None. Checked on that
    trial, so that a restored search (its points recomputed from this command's settings) says so only where true."""
    for result in grid if first else []:
        if str((result.metrics or {}).get("trial_id", "")).endswith("_00000"):
            ran = {key: _plain(result.config.get(key)) for key in first[0]}
            return first if ran == {key: _plain(value) for key, value in first[0].items()} else None
    return None


def write_outputs(grid, space, fixed, output_dir, model, dataset, first=None, derived=None):
    frame = grid.get_dataframe(filter_metric=METRIC, filter_mode="max")  # each trial at its best validation
    if frame.empty or METRIC not in frame:
        errors = [str(r.error).splitlines()[0] for r in grid if r.error]
        raise LumosError(f"No trial reported {METRIC}: {errors[0] if errors else 'see the Ray logs in ' + output_dir}")
    searched = [f"config/{key}" for key in space]
    frame = frame.dropna(subset=[METRIC]).sort_values(METRIC, ascending=False)  # a failed trial has no score
    columns = ["trial_id"] + [c for c in searched if c in frame] + [METRIC, VALIDATION]
    table = frame[columns].rename(columns={c: c.split("/", 1)[1] for c in searched})
    table = table.rename(columns={VALIDATION: "best at report"})  # the n-th validation
    os.makedirs(output_dir, exist_ok=True)
    table.to_csv(os.path.join(output_dir, "trials.csv"), index=False)
    finished = {r.metrics.get("trial_id"): r.metrics for r in grid if r.metrics and r.metrics.get("final")}
    lines = [f"# Ray Tune search: {model} on {dataset}", "",
             f"{len(table)} trials, ASHA on {METRIC}; sorted by each trial's best {METRIC}. Test metrics only for "
             "trials that ran to the end (ASHA stopped the others)."
             + (f" The first trial (id ending in 00000) ran the model's defaults: "
                f"{', '.join(f'{k}={_plain(v)}' for k, v in first[0].items())}." if first else "")
             + "".join(f" In every trial {key} = {factor} x {source}."
                       for key, (source, factor) in (derived or {}).items()),
             "",
             "| " + " | ".join(list(table.columns) + ["test hit@20", "test ndcg@20"]) + " |",
             "|" + "---|" * (len(table.columns) + 2)]
    for _, row in table.iterrows():
        done = finished.get(row["trial_id"], {})
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.tolist()]
        cells += [f"{done[m]:.4f}" if m in done else "stopped" for m in ("test_hit@20", "test_ndcg@20")]
        lines.append("| " + " | ".join(cells) + " |")
    for result in grid:
        if result.error:  # a trial that crashed is listed with its error, not dropped silently
            settings = ", ".join(f"{k}={_plain(v)}" for k, v in (result.config or {}).items())
            lines.append(f"\nFailed trial ({settings}): {str(result.error).strip().splitlines()[-1][:300]}")
    budget = max(len(table), sum(1 for _ in grid))  # a crashed trial has no row but was part of the budget
    plot_search(table, os.path.join(output_dir, "search.png"), model, dataset, budget)
    lines += ["", "Each trial's best validation NDCG@20 in the order the trials started, and the best so far: "
              "[search.png](search.png)"]
    with open(os.path.join(output_dir, "trials.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    best_row = table.iloc[0]
    best = {**fixed, **{key: _plain(best_row[key]) for key in space}}
    best.update(derive(derived or {}, best))
    best.pop("data_path", None)  # machine-specific; the run's default finds the dataset
    with open(os.path.join(output_dir, "best.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# Best of {len(table)} trials of {model} on {dataset}: {METRIC} {best_row[METRIC]:.4f}\n")
        yaml.safe_dump(best, f, sort_keys=True)
    print("\n".join(lines[4:-2]))
    print(f"best {METRIC} {best_row[METRIC]:.4f}; config: {os.path.join(output_dir, 'best.yaml')} "
          f"(recbole-lumos -m {model} -d {dataset} "
          f"--config_files={os.path.join(output_dir, 'best.yaml')})")
    return best


def search_series(table):
    """(trial ids in the order they started, each one's best validation score, the best so far after each) from a
    trials table (``trial_id`` and ``valid_ndcg@20`` columns, in any order). Ray numbers a search's trials as it
    creates them (``<search>_00000``, ``_00001``, ...) and starts them in that order."""
    def started(trial_id):
        suffix = str(trial_id).rsplit("_", 1)[-1]
        return int(suffix) if suffix.isdigit() else float("inf")

    rows = sorted(zip(table["trial_id"], table[METRIC]), key=lambda row: started(row[0]))
    ids, scores = [str(trial_id) for trial_id, _ in rows], [float(score) for _, score in rows]
    best, running = [], float("-inf")
    for score in scores:
        running = max(running, score)
        best.append(running)
    return ids, scores, best


def plot_search(table, path, model, dataset, budget=None):
    """Write ``path`` (a PNG): the trials in the order they started on the x axis, each trial's best validation
    NDCG@20 as a dot and the best so far as a step line; titled with the model, the dataset and the budget (the
    number of trials, ``len(table)`` unless given). Returns search_series(table)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without touching pyplot's global backend
    from matplotlib.figure import Figure

    ids, scores, best = search_series(table)
    positions = list(range(1, len(ids) + 1))
    figure = Figure(figsize=(6.4, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(positions, scores, "o", color="tab:blue", label="trial's best validation NDCG@20")
    axes.step(positions, best, where="post", color="tab:orange", label="best so far")
    best_at = scores.index(best[-1]) + 1 if scores else None
    if best_at:
        axes.annotate(f"{best[-1]:.4f}", (best_at, best[-1]), textcoords="offset points", xytext=(0, 6),
                      ha="center", fontsize=8)
    axes.set_xticks(positions, [trial_id.rsplit("_", 1)[-1] for trial_id in ids], rotation=45, fontsize=8)
    axes.set_xlabel("trial, in the order started (Ray's trial number)")
    axes.set_ylabel("validation NDCG@20")
    axes.set_title(f"{model} on {dataset}: {budget or len(ids)} trials", fontsize=10)
    axes.grid(alpha=0.3)
    axes.margins(y=0.12)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    return ids, scores, best


def _plain(value):
    """numpy scalars -> Python values, so the yaml stays readable."""
    return value.item() if hasattr(value, "item") else value
