"""Paired significance of a benchmark: one run against every other, over test users and over seeds.

    python benchmarks/significance.py --runs_dir=results/benchmark/ml-100k --reference=LUMOS-llm \
        --output=docs/benchmarks/constrained-views/ml-100k-significance.md [--runs=FedSASRec,LUMOS-random]

For every finished run (``<runs_dir>/<run>/seed<seed>/``, as ``run_lumos.py --benchmark`` leaves them) it reads
each test user's NDCG@20 and HR@20 that the run wrote beside its result file (``recbole_lumos/significance.py``);
for a run from before runs wrote them, it reloads the best model with RecBole's ``load_data_and_model``, evaluates
the test users with RecBole's own evaluator and writes them there. Users are paired by (seed, user): the split is
the same for every run. The tests are scipy's Wilcoxon signed-rank test over the pooled pairs (users with equal
values drop out, its default) and a paired t-test over the seeds' means; the table gives both means, the relative
difference and both p-values. The benchmark's tables carry the same tests against the plan's ``reference`` run.

    python benchmarks/significance.py --runs_csv=docs/benchmarks/head-to-head/amazon-office-runs.csv

reads the seeds' test means from a benchmark's runs CSV instead, for a table whose per-user values were not kept:
the test over the seeds only.
"""
import csv
import glob
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import recbole_lumos  # noqa: E402,F401  (patches RecBole, teaches it the plugin's models)
from recbole.quick_start import load_data_and_model  # noqa: E402
from recbole.utils import get_trainer  # noqa: E402
from recbole_lumos.benchmark import result_file  # noqa: E402
from recbole_lumos.significance import (PER_USER_METRICS, evaluate_per_user, load_per_user,  # noqa: E402
                                       paired_comparison, save_per_user, seed_comparison)
from script_options import parse_options, print_report  # noqa: E402  (benchmarks/)

def per_user_test(seed_folder):
    """{metric: [users]} of the run's best model on the test users: written by the run, or (runs from before
    that) recomputed from its saved model and written beside its result file."""
    path = result_file(seed_folder)
    values = load_per_user(path)
    if values is not None:
        return values
    [model_file] = [f for f in glob.glob(os.path.join(seed_folder, "saved", "*.pth")) if ".resume." not in f]
    sys.argv = sys.argv[:1]
    config, model, _, _, _, test_data = load_data_and_model(model_file)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    _, values = evaluate_per_user(trainer, test_data, load_best_model=False, show_progress=False)
    save_per_user(path, values)
    return values


def per_user_runs(runs_dir, wanted):
    """{run: {seed: {metric: each test user's value}}} of the finished runs in a benchmark's runs folder (those
    that ``wanted(run)``: an old run's values may have to be recomputed, which takes a while)."""
    runs = {}
    for seed_folder in sorted(glob.glob(os.path.join(runs_dir, "*", "seed*"))):
        run, seed = seed_folder.split(os.sep)[-2:]
        if wanted(run) and glob.glob(os.path.join(seed_folder, "*", "*.json")):  # else unfinished or failed
            runs.setdefault(run, {})[seed] = per_user_test(seed_folder)
    return runs


def seed_mean_runs(runs_csv):
    """{run: {seed: {metric: [the seed's test mean]}}} from a benchmark's runs CSV: the t-test over the seeds'
    means needs no more, the test over users cannot be run from it."""
    if not os.path.isfile(runs_csv):
        raise SystemExit(f"error: no runs CSV at {runs_csv}")
    runs = {}
    with open(runs_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok":
                runs.setdefault(row["run"], {})[f"seed{row['seed']}"] = {
                    metric: np.array([float(row[metric])]) for metric in PER_USER_METRICS}
    return runs


def main(argv):
    options = parse_options(argv, {"runs_dir": "results/benchmark/ml-100k", "reference": "LUMOS-llm", "output": "",
                                   "runs": "", "runs_csv": ""})
    only = {name.strip() for name in options["runs"].split(",") if name.strip()}  # "": every run of the folder
    reference = options["reference"]
    wanted = lambda run: not only or run in only | {reference}  # noqa: E731
    over_users = not options["runs_csv"]
    runs = per_user_runs(options["runs_dir"], wanted) if over_users else seed_mean_runs(options["runs_csv"])
    runs = {run: seeds for run, seeds in runs.items() if wanted(run)}
    if reference not in runs:
        where = options["runs_dir"] if over_users else options["runs_csv"]
        raise SystemExit(f"error: no finished run '{reference}' in {where}: have {', '.join(runs)}")
    lines = [f"# {reference} against each run: paired tests over test users and over seeds",
             "", f"`python benchmarks/significance.py {' '.join(argv)}` ({time.strftime('%Y-%m-%d')}). "
             "Over the seeds both runs finished: 'p, users' is a Wilcoxon signed-rank test over the (seed, user) "
             "pairs, 'p, seeds' a paired t-test over the seeds' means, which sees the run-to-run noise the first "
             "does not (recbole_lumos/significance.py)."
             + ("" if over_users else " Read from a runs CSV: the seeds' means, no per-user values."), "",
             "| run | seeds | pairs | metric | " + reference + " | run | relative difference | p, users | p, seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs):
        if run == reference:
            continue
        seeds = sorted(set(runs[run]) & set(runs[reference]))
        for metric in PER_USER_METRICS:
            mine, theirs = [runs[reference][s][metric] for s in seeds], [runs[run][s][metric] for s in seeds]
            a, b = np.concatenate(mine), np.concatenate(theirs)
            difference, p = paired_comparison(a, b)
            p_users, pairs = (f"{p:.3g}", len(a)) if over_users else ("not kept", "")
            p_seeds = seed_comparison(mine, theirs)
            p_seeds = "" if p_seeds is None else f"{p_seeds:.3g}"
            lines.append(f"| {run} | {len(seeds)} | {pairs} | {metric.upper().replace('HIT', 'HR')} | {a.mean():.4f} | "
                         f"{b.mean():.4f} | {difference:+.1%} | {p_users} | {p_seeds} |")
    text = "\n".join(lines) + "\n"
    print_report(text, options["output"])


if __name__ == "__main__":
    main(sys.argv[1:])
