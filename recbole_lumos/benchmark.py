"""Head-to-head benchmark: every run of ``properties/benchmark.yaml``, once per seed, each in its own process.

    python run_lumos.py --benchmark --dataset=ml-100k [--runs=SASRec,LUMOS-llm] [--seeds=2020,2021] [--workers=4]
    python run_lumos.py --benchmark --dataset=ml-100k --report_only=True   # only rebuild the outputs
    python run_lumos.py --benchmark --dataset=ml-100k --benchmark_file=robustness --output_dir=docs/robustness

Plans: ``properties/benchmark.yaml`` (the default), ``properties/plans/<name>.yaml`` (``--benchmark_file=<name>``) or
any path. Plans share a runs folder unless they name their own (``runs_folder``): a run of the same name and
settings is run once for all the plans that share it. ``runs_from: <plan path>`` (relative to the plan) takes another
plan's runs (a plan that lists them itself), so that two plans over the same runs keep one list.
Each (run, seed) gets a folder ``<runs_dir>/<run>/seed<seed>/`` holding its config, its log and its result file
(``results/<runs_folder>/<dataset>``, ``runs_folder`` from the plan, default ``benchmark``).
A rerun skips the runs already finished with the same config (an interrupted benchmark resumes), retries the
failed ones, and a failed run leaves its error for the table. Any other ``--key=value`` applies to every run.
``--tuned_dir=results/tune`` gives each run its model's best settings from ``--tune`` (under the run's own), so
that every model of the head-to-head runs with the result of the same search budget; the table says which.
Outputs, rebuilt from the result files each time, in ``<output_dir>`` (default ``results/benchmarks``; a committed
report names its docs/ folder): ``<dataset>.md`` (mean ± std over seeds),
``<dataset>-runs.csv`` (one row per run), ``<dataset>-curves.csv``, ``<dataset>-per-user.npz`` (each run's test
users' values, for the paired tests) and ``<dataset>.png`` (metrics, and validation NDCG@20 against wall time).
The first three are also the record a run missing from the runs folder is read from (``recbole_lumos/record.py``):
a fresh clone extends a committed report without rerunning its rows. The runs CSV keeps each run's
``settings_digest``, so a recorded run is skipped only if the plan still gives it the same settings (rows
recorded before the digest existed have none and run again), and the report names the finished rows whose settings
differ from what the plan gives them now. A result is reported only under a run of its own model, and a result of a
model whose name has come to name other code (``REDEFINED_MODELS``) only if written since. A run's result file
names the view set it trained on; the report names the rows compared with the reference that read another view set
of the same kind, and those whose view set is unknown. A run's ``by_dataset: {dataset: settings}`` applies on that
dataset only (e.g. SASRecF's item columns).
"""
import csv
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from logging import getLogger

import numpy as np
import yaml
from tqdm import tqdm

from recbole_lumos import paths
from recbole_lumos.augment.llm_backend import torch_threads
from recbole_lumos.augment.quality import gate_of_run, markdown
from recbole_lumos.augment.settings import view_seed
from recbole_lumos.cli import list_option
from recbole_lumos.errors import LumosError
from recbole_lumos.registry import plugin_models
from recbole_lumos.quick_start import PROPERTIES, REPORTED_METRICS, prepare_views
from recbole_lumos.record import per_user_path, read_record, write_per_user
from recbole_lumos.significance import PER_USER_METRICS, load_per_user, paired_comparison, seed_comparison

CURVE_METRIC = "ndcg@20"
# what a run measured beyond its metrics: a column wherever some run has it (DP runs, LUMOS's head diagnostics)
EXTRA_COLUMNS = {"epsilon": "DP epsilon", "head_drift": "Head drift", "heads_trained": "Heads trained",
                 "tri_loss": "L_tri (trained head)", "tri_loss_initial_head": "L_tri (initial head)"}
LOCATION_KEYS = {"results_dir", "checkpoint_dir", "raw_data_path"}  # where a run reads or writes, not what it computes
UNTUNED = "package defaults"
# Names that now name other code than the runs once recorded under them (CL4SRec and FedCL4SRec were LUMOS with
# random views, now LUMOS-random-central and LUMOS-random): a result of such a model written before the time given
# (its result file's name carries it) came from the former code, and is neither reported nor skipped as finished
REDEFINED_MODELS = {"CL4SRec": "20261208-000000", "FedCL4SRec": "20261208-000000"}
NOTES_START, NOTES_END = "<!-- notes: kept when the file is rebuilt -->", "<!-- /notes -->"


# ------------------------------------------------------------------------------------------------- the plan
def plan_path(name):
    """A plan's file: a path, or the name of one in ``properties/plans/``."""
    if os.path.isfile(name) or name.endswith(".yaml"):
        return name
    return os.path.join(PROPERTIES, "plans", f"{name}.yaml")


def read_plan(path, _read_by=None):
    """A plan file's contents, checked: ``runs`` maps names to settings with a model, ``reference`` is one of them."""
    if not os.path.isfile(path):
        raise LumosError(f"Benchmark file {path} does not exist: "
                         + (f"check runs_from in {_read_by}" if _read_by else "check --benchmark_file"))
    with open(path, encoding="utf-8") as f:
        plan = yaml.safe_load(f) or {}
    if plan.get("runs_from"):  # another plan's runs (one list to keep, not two), under this plan's other keys
        if "runs" in plan:
            raise LumosError(f"{path}: give 'runs' or 'runs_from', not both")
        if _read_by:  # one step only: no chains to follow, no cycles to guard against
            raise LumosError(f"{_read_by}: runs_from names {path}, which has runs_from itself; "
                             "name the plan with the runs")
        plan["runs"] = read_plan(os.path.join(os.path.dirname(path), plan["runs_from"]), _read_by=path).get("runs")
    runs = plan.get("runs") or {}
    if not isinstance(runs, dict) or any(not isinstance(s, dict) or "model" not in s for s in runs.values()):
        raise LumosError(f"{path}: 'runs' must map each run name to settings with a 'model' key")
    for name, s in runs.items():
        by_dataset = s.get("by_dataset", {})
        if not isinstance(by_dataset, dict) or any(not isinstance(v, dict) for v in by_dataset.values()):
            raise LumosError(f"{path}: run {name}'s by_dataset must map dataset names to settings")
    if plan.get("reference") is not None and plan["reference"] not in runs:
        raise LumosError(f"{path}: reference '{plan['reference']}' is not one of its runs: {', '.join(runs)}")
    return plan


def select_runs(plan, only=None, seeds=None, dataset=None):
    """[(run name, model, settings)], seeds: the plan's, narrowed to ``only`` (names) and ``seeds`` if given.
    The plan's ``settings`` apply to every run, under each run's own, and a run's ``by_dataset: {dataset:
    settings}`` over those on that dataset (item columns differ between datasets)."""
    runs = plan.get("runs") or {}
    if only:
        unknown = [name for name in only if name not in runs]
        if unknown:
            raise LumosError(f"Unknown benchmark run(s) {', '.join(unknown)}: choose among {', '.join(runs)}")
        runs = {name: runs[name] for name in only}
    seeds = seeds if seeds is not None else plan.get("seeds", [2020])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise LumosError(f"seeds must be a list of integers, got {seeds!r}")
    common = plan.get("settings") or {}
    return [(name, s["model"], {**common, **{k: v for k, v in s.items() if k not in ("model", "by_dataset")},
                                **(s.get("by_dataset") or {}).get(dataset, {})})
            for name, s in runs.items()], seeds


def run_config(settings, common, seed, folder):
    """The yaml a run reads: its own settings, the command line's, its seed, and where its files go."""
    return {**settings, **common, "seed": seed, "results_dir": folder,
            "checkpoint_dir": os.path.join(folder, "saved"), "show_progress": False, "views_fallback": False}


def tuned_settings(tuned_dir, model, dataset):
    """(settings, where they came from): ``<tuned_dir>/<Model>-<dataset>/best.yaml`` as ``--tune`` writes it, or
    ({}, UNTUNED) without one."""
    path = os.path.join(tuned_dir, f"{model}-{dataset}", "best.yaml") if tuned_dir else None
    if not (path and os.path.isfile(path)):
        return {}, UNTUNED
    with open(path, encoding="utf-8") as f:
        text = f.read()
    heading = text.splitlines()[0].lstrip("# ").split(":")[0]  # "Best of 8 trials of LUMOS on ml-100k"
    return yaml.safe_load(text) or {}, f"{heading} ({os.path.relpath(path)})"


def result_file(folder):
    files = sorted(glob.glob(os.path.join(folder, "*", "*.json")), key=os.path.getmtime)
    return files[-1] if files else None


def former_code(model, path):
    """Whether a result of ``model`` (its file's path) was written by code that no longer goes by that name."""
    since = REDEFINED_MODELS.get(model)
    written = re.search(r"-(\d{8}-\d{6})\.json$", str(path or ""))  # <model>-seed<seed>-<YYYYmmdd-HHMMSS>.json
    return since is not None and (written is None or written.group(1) < since)


# ------------------------------------------------------------------------------------------------- one run
def run_one(model, dataset, config, folder, threads, config_files=(), tuning=UNTUNED):
    """Run one (run, seed) in a child process (own memory peak, own crash); returns None or the error line."""
    os.makedirs(folder, exist_ok=True)
    config_path = os.path.join(folder, "config.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=True)
    with open(os.path.join(folder, "tuning.txt"), "w", encoding="utf-8") as f:
        f.write(tuning + "\n")  # for the table: where its settings came from
    for stale in (os.path.join(folder, "error.txt"), result_file(folder)):
        if stale and os.path.exists(stale):
            os.remove(stale)
    # the child imports this very package (a checkout, an installed copy), whatever its working folder
    pythonpath = os.pathsep.join(filter(None, [str(paths.IMPORT_ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=pythonpath)
    files = " ".join([*config_files, config_path])  # the run's own file last: it has the last word
    command = [sys.executable, "-m", "recbole_lumos", f"--model={model}", f"--dataset={dataset}",
               f"--config_files={files}"]
    with open(os.path.join(folder, "log.txt"), "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        returncode = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    if returncode == 0 and result_file(folder):
        return None
    with open(os.path.join(folder, "log.txt"), encoding="utf-8", errors="replace") as log:
        lines = [line.strip() for line in log if line.strip()]
    error = next((l for l in reversed(lines) if l.startswith("error:")), lines[-1] if lines else "no output")
    error = f"exit {returncode}: {error}"[:300]
    with open(os.path.join(folder, "error.txt"), "w", encoding="utf-8") as f:
        f.write(error + "\n")
    return error


def read_config(folder):
    """The settings a run folder's run was given (``config.yaml``, as ``run_one`` wrote it), or None."""
    path = os.path.join(folder, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def is_finished(folder, config, model=None):
    """Finished with the same settings (a changed setting reruns it; a runs folder may have moved machines), by the
    code that goes by the model's name now."""
    done, path = read_config(folder), result_file(folder)
    if not (path and done is not None) or former_code(model, path):
        return False
    return _without_locations(done) == _comparable(config)


def _without_locations(config):
    return {k: v for k, v in config.items() if k not in LOCATION_KEYS}


def _comparable(config):
    """A run's settings as its folder's yaml gives them back (plain types), less where its files go."""
    return _without_locations(json.loads(json.dumps(config)))


def settings_digest(config):
    """A short fingerprint of what a run computes (its settings, less where its files go), kept in the record."""
    canonical = json.dumps(_comparable(config), sort_keys=True)
    return "sha1:" + hashlib.sha1(canonical.encode()).hexdigest()[:12]  # never read back as a number


def in_record(recorded_row, config, model=None):
    """The committed record holds this run as finished with the same settings, by the same model's current code."""
    return (recorded_row is not None and recorded_row.get("settings_digest") == settings_digest(config)
            and usable_record(recorded_row, model))


def usable_record(recorded_row, model):
    """A recorded row may stand for a plan's run of ``model``: the same model, not its former code."""
    return (model is None or recorded_row.get("model") == model) and not former_code(
        recorded_row.get("model"), recorded_row.get("result_file"))


# ------------------------------------------------------------------------------------------------- the benchmark
def _count(value, name):
    """A positive whole number from the command line (--workers, --threads), or one line saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LumosError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def benchmark(dataset, settings, config_files=(), argv=()):
    """Run the plan (settings: the command line's --key=value, benchmark keys included; config_files: read by
    every run); returns the output paths."""
    logger = getLogger()
    settings = dict(settings)
    plan_file = plan_path(settings.pop("benchmark_file", os.path.join(PROPERTIES, "benchmark.yaml")))
    only = [str(name) for name in list_option(settings.pop("runs", None)) or []]  # names, whatever RecBole parsed
    plan = read_plan(plan_file)
    runs, seeds = select_runs(plan, only, list_option(settings.pop("seeds", None)), dataset)
    workers = _count(settings.pop("workers", 1), "workers")
    runs_folder = plan.get("runs_folder", "benchmark")  # a plan whose runs must not mix with the others' has its own
    runs_dir = os.path.abspath(settings.pop("runs_dir", os.path.join("results", runs_folder, dataset)))
    # under results/ like every other output: an installed package must not write docs/ into the user's folder
    output_dir = os.path.abspath(settings.pop("output_dir", os.path.join("results", "benchmarks")))
    # torch threads per run
    threads = _count(settings.pop("threads", max(1, (os.cpu_count() or 1) // workers)), "threads")
    config_files = [os.path.abspath(path) for path in config_files]
    report_only = settings.pop("report_only", False)  # rebuild the table, plot and CSVs from the runs on disk
    tuned_dir = settings.pop("tuned_dir", None)  # each model's best settings from its own Ray Tune search

    recorded_rows = read_record(output_dir, dataset)[0]
    jobs, from_record = [], 0
    for name, model, run_settings in runs:
        tuned, tuning = tuned_settings(tuned_dir, model, dataset)
        for seed in seeds:
            folder = os.path.join(runs_dir, name, f"seed{seed}")
            config = run_config({**tuned, **run_settings}, settings, seed, folder)  # the run's own settings win
            if report_only or is_finished(folder, config, model):
                continue
            if in_record(recorded_rows.get((name, seed)), config, model):  # finished elsewhere: the report has it
                from_record += 1
                continue
            jobs.append((name, model, config, folder, tuning))
    recorded_note = f", {from_record} of them in the record in {os.path.relpath(output_dir)}" if from_record else ""
    print(f"benchmark on {dataset}: {len(runs)} runs x {len(seeds)} seeds, {len(jobs)} to do "
          f"({len(runs) * len(seeds) - len(jobs)} already finished{recorded_note}), {workers} at a time; "
          f"files in {runs_dir}")

    # Views are generated once, before any run starts: parallel runs (and runs of the same seed) then only read them.
    # This phase runs alone, so it gets the benchmark's whole thread budget (workers x threads), not torch's default
    # of every core, which oversubscribes cores shared with other jobs (docs/speed.md: 3.3 s a client, not 1.1 s)
    with torch_threads(workers * threads):
        prepared = set()
        for name, model, config, folder, _ in jobs:
            attack = config.get("attack", "none")
            key = (model, config.get("views"), view_seed(config), config.get("noise_ratio"),  # the runs sharing views:
                   attack, config.get("attack_fraction"),
                   config["seed"] if attack != "none" else None)  # fakes: per seed
            if key in prepared or model not in plugin_models():
                continue
            prepared.add(key)
            try:
                stats = prepare_views(model, dataset, config_files, config)
                if stats:
                    print(f"views for {name} seed {config['seed']}: {stats.get('views')} ready")
                gate = gate_of_run(model, dataset, config_files, config)  # None: the model trains without views
                if gate:
                    print(f"view quality for {name} seed {config['seed']}:\n{markdown(gate[0])}", flush=True)
            except Exception as e:  # the run itself will fail and record why
                logger.warning(f"could not prepare views for {name} seed {config['seed']}: {e}")

    with tqdm(total=len(jobs), desc="benchmark", unit="run", dynamic_ncols=True) as bar:
        def job(args):
            name, model, config, folder, tuning = args
            error = run_one(model, dataset, config, folder, threads, config_files, tuning)
            bar.set_postfix_str(f"{name} seed {config['seed']}: {'failed' if error else 'done'}")
            bar.update(1)
            return name, config["seed"], error

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for name, seed, error in pool.map(job, jobs):
                if error:
                    tqdm.write(f"{name} seed {seed} failed: {error}")
    # The report is the whole plan's, whatever --runs/--seeds ran now: its files are also the record, and a
    # narrowed report would drop the rows that only the record holds
    command = " ".join(["python run_lumos.py --benchmark",
                        *(a for a in argv if not a.startswith(("--report_only", "--runs=", "--seeds=")))])
    plan_runs, plan_seeds = select_runs(plan, dataset=dataset)
    report_seeds = sorted(set(plan_seeds) | set(seeds))
    planned = {(name, seed): settings_digest(run_config({**tuned_settings(tuned_dir, model, dataset)[0], **own},
                                                        settings, seed, ""))
               for name, model, own in plan_runs for seed in report_seeds}  # what the plan gives each run now
    return write_report(dataset, plan_runs, report_seeds, runs_dir, output_dir, command.strip(), plan_file, plan,
                        planned)


# ------------------------------------------------------------------------------------------------- the report
def collect(runs, seeds, runs_dir, record):
    """One row per (run, seed) from the files on disk, or from the committed record (``read_record``) where the
    run's folder holds no result; each finished run's validation curve and per-user values. A result is only read
    for the model the plan names, by that model's current code (``former_code``)."""
    recorded_rows, recorded_curves, recorded_per_user = record
    rows, curves, per_user = [], [], {}
    for name, model, _ in runs:
        for seed in seeds:
            folder = os.path.join(runs_dir, name, f"seed{seed}")
            row, values = {"run": name, "model": model, "seed": seed, "status": "not run"}, None
            path = result_file(folder)
            path = None if former_code(model, path) else path
            recorded = recorded_rows.get((name, seed))
            tuning = os.path.join(folder, "tuning.txt")
            if os.path.isfile(tuning):
                with open(tuning, encoding="utf-8") as f:
                    row["tuning"] = f.read().strip()
            if path:
                with open(path, encoding="utf-8") as f:
                    result = json.load(f)
                given = read_config(folder)
                row.update(status="ok", **{m: result["test_result"].get(m) for m in REPORTED_METRICS},
                           **{f"valid_{CURVE_METRIC}": result["best_valid_result"].get(CURVE_METRIC)},
                           wall_time_s=result["wall_time_s"], time_to_best_s=result.get("time_to_best_s"),
                           peak_memory_mb=result["peak_memory_mb"], device=result.get("device", ""),
                           epsilon=(result.get("privacy") or {}).get("epsilon"), **result.get("diagnostics", {}),
                           epochs_run=max((e for _, e, _ in result.get("valid_curve", [])), default=None),
                           epoch_budget=result.get("config", {}).get("epochs"),
                           versions=result.get("versions", ""),
                           result_file=os.path.relpath(path, runs_dir),
                           settings_digest=settings_digest(given) if given is not None else None,
                           view_kind=(result.get("views") or {}).get("kind"),
                           view_set=(result.get("views") or {}).get("key"))
                curves += [{"run": name, "seed": seed, "seconds": s, "epoch": e, f"valid_{CURVE_METRIC}": v}
                           for s, e, v in result.get("valid_curve", [])]
                values = load_per_user(path)
            elif os.path.isfile(os.path.join(folder, "error.txt")):
                with open(os.path.join(folder, "error.txt"), encoding="utf-8") as f:
                    row.update(status="failed", error=f.read().strip())
            elif recorded is not None and usable_record(recorded, model):
                row = dict(recorded, from_record=True)
                curves += recorded_curves.get((name, seed), [])
                values = recorded_per_user.get((name, seed))
            if row["status"] == "ok" and values is not None:
                per_user[name, seed] = values
            rows.append(row)
    return rows, curves, per_user


def mean_std(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def is_tuned(row):
    """Whether a run's settings came from a search (rows recorded before the column existed have none)."""
    return (row.get("tuning") or UNTUNED) != UNTUNED


def reference_comparisons(reference, runs, per_user, rows):
    """{run: [cell per PER_USER_METRICS]}: the reference's mean against the run's (``comparison_cell``) over the
    seeds where both finished.
    A tuned run is only compared with tuned runs and an untuned one with untuned ones: against settings of another
    budget a difference says more about the tuning than about the models."""
    tuned = {(r["run"], r["seed"]): is_tuned(r) for r in rows}

    def seeds_of(run):
        return {seed: values for (name, seed), values in per_user.items() if name == run}

    mine = seeds_of(reference)
    cells = {}
    for name, _, _ in runs:
        theirs = seeds_of(name)
        both = set(mine) & set(theirs)
        seeds = sorted(s for s in both if tuned.get((reference, s)) == tuned.get((name, s)))
        if name == reference or not seeds:
            cell = "" if name == reference else "n/a (tuned against untuned)" if both else "n/a"
            cells[name] = [cell] * len(PER_USER_METRICS)
            continue
        cells[name] = [comparison_cell([mine[s][metric] for s in seeds], [theirs[s][metric] for s in seeds])
                       for metric in PER_USER_METRICS]
    return cells


def comparison_cell(mine, theirs):
    """'+6.5% (p 0.048 users, 0.12 seeds; 3 seeds)' from two runs' per-user values, one array per seed."""
    difference, p_users = paired_comparison(np.concatenate(mine), np.concatenate(theirs))
    p_seeds = seed_comparison(mine, theirs)
    over_seeds = "" if p_seeds is None else f", {p_seeds:.2g} seeds"
    return f"{difference:+.1%} (p {p_users:.2g} users{over_seeds}; {len(mine)} seed{'s' if len(mine) > 1 else ''})"


def budget_used(rows):
    """'180-260 / 1000': the last evaluated epoch (or round) over the seeds, against the budget (``epochs``)."""
    run = sorted({r["epochs_run"] for r in rows if r.get("epochs_run") is not None})
    budget = sorted({r["epoch_budget"] for r in rows if r.get("epoch_budget") is not None})
    if not run:
        return ""
    span = str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
    return f"{span} / {'/'.join(map(str, budget))}"


def summary_table(runs, rows, comparisons=None, reference=None):
    # ER@K exists only in runs under an attack (or report_exposure), epsilon in DP runs: a column where a run has it
    rows_here = [r for r in rows if r["run"] in {name for name, _, _ in runs}]
    metrics = [m for m in REPORTED_METRICS if any(r.get(m) is not None for r in rows_here)]
    extras = [k for k in EXTRA_COLUMNS if any(r.get(k) is not None for r in rows_here)]
    versus = [f"{reference} vs run, {m.upper().replace('HIT', 'HR')}" for m in PER_USER_METRICS] if comparisons else []
    tuned = any(is_tuned(r) for r in rows)  # in every table once some run was tuned
    head = ["Run", "Model", "Seeds", *(m.upper().replace("HIT", "HR") for m in metrics), *versus,
            "Valid NDCG@20", *(EXTRA_COLUMNS[k] for k in extras), "Epochs or rounds run / budget",
            *(["Settings"] if tuned else []), "Wall time (s)", "Peak memory (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, model, _ in runs:
        mine = [r for r in rows if r["run"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        cells = [name, model, f"{len(ok)}/{len(mine)}"]
        cells += [mean_std([r[m] for r in ok], 4) for m in metrics]
        cells += comparisons[name] if comparisons else []
        cells += [mean_std([r[f"valid_{CURVE_METRIC}"] for r in ok], 4)]
        cells += [mean_std([r.get(k) for r in ok], 3) for k in extras]
        cells += [budget_used(ok)] + ([" / ".join(sorted({r.get("tuning") or UNTUNED for r in ok}))] if tuned else [])
        cells += [mean_std([r["wall_time_s"] for r in ok], 0), mean_std([r["peak_memory_mb"] for r in ok], 0)]
        errors = sorted({r["error"] for r in mine if r["status"] == "failed"})
        if errors and not ok:
            cells[3] = "failed: " + "; ".join(errors).replace("|", "/")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.IMPORT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "(no git)"
    except (OSError, subprocess.SubprocessError):
        return "(no git)"


def kept_notes(path):
    if not os.path.isfile(path):
        return "(none yet)"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find(NOTES_START), text.find(NOTES_END)
    if not 0 <= start < end:
        return "(none yet)"
    # a note added below the end marker by hand is kept too, moved inside, rather than lost at the next rebuild
    notes = [text[start + len(NOTES_START): end].strip(), text[end + len(NOTES_END):].strip()]
    return "\n".join(note for note in notes if note)


def sectioned_tables(sections, runs, rows, comparisons=None, reference=None):
    """One table, or one per section of the plan (``sections: {title: [run names]}``) for the runs present."""
    if not sections:
        return summary_table(runs, rows, comparisons, reference)
    parts = []
    for title, names in sections.items():
        mine = [run for run in runs if run[0] in names]
        if mine:
            parts += [f"### {title}", "", summary_table(mine, rows, comparisons, reference), ""]
    return "\n".join(parts).rstrip()


def other_settings(rows, planned):
    """'A (2020, 2021); B (2022)': the finished rows run with other settings than the plan gives them now (their
    settings digests differ from ``planned``, {(run, seed): digest})."""
    runs = {}
    for row in rows:
        wanted = (planned or {}).get((row["run"], row["seed"]))
        if row["status"] == "ok" and wanted is not None and row.get("settings_digest") != wanted:
            runs.setdefault(row["run"], []).append(str(row["seed"]))
    return "; ".join(f"{run} ({', '.join(seeds)})" for run, seeds in runs.items())


def view_set_notes(runs, rows, reference):
    """The report's lines on view sets: the rows whose view set is unknown (the plugin's models only: RecBole's read
    none), and for each kind of generated views the reference read, the rows compared with it that read another
    view set of that kind."""
    ok = [row for row in rows if row["status"] == "ok"]
    unknown = [name for name, model, _ in runs if model in plugin_models() and any(
        row["run"] == name and (not row.get("view_kind") or (row["view_kind"] in ("llm", "embedding")
                                                              and not row.get("view_set"))) for row in ok)]
    keyed = {}  # {run: {kind: {view set key}}}
    for row in ok:
        if row.get("view_kind") and row.get("view_set"):
            keyed.setdefault(row["run"], {}).setdefault(row["view_kind"], set()).add(row["view_set"])

    def named(keys):
        return ", ".join(f"`{key[:12]}`" for key in sorted(keys))

    notes = []
    for kind, keys in sorted(keyed.get(reference, {}).items()):
        other = [f"{name} ({named(sets[kind])})" for name, sets in keyed.items()
                 if name != reference and kind in sets and sets[kind] != keys]
        notes.append(f"- View sets: {reference} read the {kind} view set {named(keys)}; "
                     + (f"rows compared with it that read another {kind} view set: {'; '.join(other)}." if other
                        else f"every other row that names its {kind} view set read the same one."))
    if unknown:
        notes.append(f"- View sets unknown (written before result files named the view set they read): "
                     f"{', '.join(unknown)}.")
    return notes


def write_report(dataset, runs, seeds, runs_dir, output_dir, command, plan_file, plan, planned=None):
    """The report's files; ``planned``: {(run, seed): settings digest} the plan gives each run now."""
    rows, curves, per_user = collect(runs, seeds, runs_dir, read_record(output_dir, dataset))
    recorded = sum(1 for r in rows if r.pop("from_record", False))
    title = (plan.get("title") or "Benchmark on {dataset}").format(dataset=dataset)
    reference = plan.get("reference")  # the run every other is tested against (paired, per test user)
    comparisons = reference_comparisons(reference, runs, per_user, rows) if reference else None
    tables = sectioned_tables(plan.get("sections"), runs, rows, comparisons, reference)
    os.makedirs(output_dir, exist_ok=True)
    md, runs_csv = os.path.join(output_dir, f"{dataset}.md"), os.path.join(output_dir, f"{dataset}-runs.csv")
    curves_csv, png = os.path.join(output_dir, f"{dataset}-curves.csv"), os.path.join(output_dir, f"{dataset}.png")
    write_csv(runs_csv, rows)
    write_csv(curves_csv, curves)
    write_per_user(per_user_path(output_dir, dataset), per_user)
    plot(runs, rows, curves, png, dataset)
    machines = sorted({f"{r['versions']} ({r['device']})" for r in rows if r["status"] == "ok"})
    text = "\n".join([
        f"# {title}",
        "",
        f"Test metrics, mean ± standard deviation (n-1) over seeds {', '.join(map(str, seeds))}; chronological "
        "leave-one-out, full ranking, model selection on validation NDCG@20 (`properties/overall.yaml`). "
        "Wall time is the whole run (data loading, training, evaluation) in its own process; peak memory is that "
        "process's maximum resident set (or GPU allocation, whichever is larger)."
        + (f" '{reference} vs run': how far {reference}'s mean is above the run's (relative difference) and the "
           "p-values of a paired Wilcoxon signed-rank test over the test users of the seeds both runs finished "
           "('users') and of a paired t-test over those seeds' means ('seeds', which sees the run-to-run noise "
           "the first does not), tuned only against tuned and untuned against untuned "
           "(recbole_lumos/significance.py); p >= 0.05 reads as inside the noise, and a small 'users' p with a "
           "large 'seeds' p as not shown." if reference else ""),
        "",
        tables,
        "",
        f"- Reproduce: `{command}` (finished runs are skipped, those of this folder's record too where their settings "
        f"are the same; delete `{os.path.relpath(runs_dir)}` and the record's files to start over).",
        f"- Runs: `{plan_display(plan_file)}`; every run's settings and log are in its folder under the runs folder.",
        *([f"- Record: {recorded} of the {sum(r['status'] == 'ok' for r in rows)} finished (run, seed) pairs were "
           "read from this folder's committed files (their runs folders were not on the machine that wrote it); "
           f"paired tests use the {len(per_user)} that have per-user values (`{dataset}-per-user.npz`)."]
          if recorded else []),
        *([f"- Settings: these rows ran with other settings than the plan gives them now (the table shows those "
           f"runs until the next benchmark reruns them): {other_settings(rows, planned)}."]
          if other_settings(rows, planned) else []),
        *view_set_notes(runs, rows, reference),
        f"- Versions: recbole-lumos {git_commit()} when this file was written ({time.strftime('%Y-%m-%d %H:%M')}); "
        f"the runs' own: {'; '.join(machines) or 'none yet'}.",
        f"- Files: [`{os.path.basename(runs_csv)}`]({os.path.basename(runs_csv)}) (every run), "
        f"[`{os.path.basename(curves_csv)}`]({os.path.basename(curves_csv)}) (validation curves), "
        f"`{dataset}-per-user.npz` (each run's test users' NDCG@20 and HR@20), "
        f"![plot]({os.path.basename(png)})",
        "",
        "## Notes",
        "",
        NOTES_START,
        kept_notes(md),
        NOTES_END,
        "",
    ])
    with open(md + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(md + ".tmp", md)
    print(tables)
    print(f"wrote {md}, {runs_csv}, {curves_csv}, {png}")
    return {"markdown": md, "runs_csv": runs_csv, "curves_csv": curves_csv, "plot": png}


def plan_display(plan_file):
    """The plan as a reader finds it: relative to the package's properties/ when it ships there."""
    path = os.path.abspath(plan_file)
    root = os.path.abspath(PROPERTIES)
    return "properties/" + os.path.relpath(path, root) if path.startswith(root + os.sep) else plan_file


def write_csv(path, rows):
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["run"]
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def plot(runs, rows, curves, path, dataset):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _, _ in runs]
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(14, 0.45 * len(names) + 2.5))
    y = np.arange(len(names))
    for offset, metric, label in ((-0.2, "hit@20", "HR@20"), (0.2, "ndcg@20", "NDCG@20")):
        values = [[r[metric] for r in rows if r["run"] == n and r["status"] == "ok"] for n in names]
        means = [np.mean(v) if v else 0 for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
        bars.barh(y + offset, means, height=0.4, xerr=stds, label=label, capsize=2)
    bars.set_yticks(y, names)
    bars.invert_yaxis()
    bars.set_xlabel("test metric (mean ± std over seeds)")
    bars.legend()
    bars.set_title(f"{dataset}: test HR@20 and NDCG@20")
    for i, name in enumerate(names):
        points = [c for c in curves if c["run"] == name]
        for j, seed in enumerate(sorted({c["seed"] for c in points})):
            mine = [c for c in points if c["seed"] == seed]
            lines.plot([c["seconds"] for c in mine], [c[f"valid_{CURVE_METRIC}"] for c in mine],
                       color=f"C{i % 10}", linestyle=["-", "--", ":"][i // 10 % 3], alpha=0.8,
                       label=name if j == 0 else None)
    lines.set_xscale("log")
    lines.set_xlabel("wall time (s, log scale)")
    lines.set_ylabel("validation NDCG@20")
    lines.set_title("validation NDCG@20 against wall time (every seed)")
    if curves:
        lines.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
