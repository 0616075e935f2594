"""Where in the user base a benchmark's reference run gains or loses: its paired tests within groups of test users
by training-history length (the paper claims its gains for users with short logs).

    python benchmarks/by_history_length.py --dataset=amazon-office --record_dir=docs/benchmarks/head-to-head-fair \
        --reference=LUMOS-llm --runs=FedSASRec,LUMOS-random,SASRec,LUMOS-random-central,LUMOS-embedding,LUMOS-no-views \
        --groups=4 --output=docs/benchmarks/head-to-head-fair/amazon-office-by-history.md

Reads the benchmark's committed per-user values (``<dataset>-per-user.npz``, one array per run and seed in the
test loader's user order) and rebuilds that order from the dataset with RecBole's own pipeline (the same for every
model family: tests/test_benchmark.py). A user's history length is the number of items it trains on (its
interactions less the validation and test items). Users are cut into ``groups`` groups of about equal size by that
length; within each, the reference is tested against each run as the benchmark's table does (the relative difference
of the means, Wilcoxon over the pooled (seed, user) pairs, a paired t-test over the seeds' means).
"""
import collections
import os
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import recbole_lumos  # noqa: E402,F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_seed  # noqa: E402
from recbole_lumos.benchmark import comparison_cell  # noqa: E402
from recbole_lumos.quick_start import build_config  # noqa: E402
from recbole_lumos.record import read_record  # noqa: E402
from script_options import parse_options, print_report  # noqa: E402  (benchmarks/)

METRICS = {"ndcg@20": "NDCG@20", "hit@20": "HR@20"}


def history_lengths(dataset):
    """Each test user's number of training items, in the test loader's order (the per-user values' order)."""
    config = build_config("SASRec", dataset, config_dict={"show_progress": False, "state": "ERROR"})
    init_seed(config["seed"], config["reproducibility"])
    data, uid = create_dataset(config), config["USER_ID_FIELD"]
    # counted before data_preparation: a sequential dataset's build replaces inter_feat with its (prefix, target) rows
    interactions = collections.Counter(np.asarray(data.inter_feat[uid]).tolist())
    _, _, test_data = data_preparation(config, data)
    users = np.concatenate([batch[0][uid].numpy() for batch in test_data])
    return np.array([interactions[u] - 2 for u in users])  # less the validation and the test item


def groups_by_length(lengths, n_groups):
    """[(label, mask)]: cut points at the length quantiles (a length never splits across two groups)."""
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_groups + 1)[1:-1], method="higher"))
    bounds = [lengths.min(), *edges, lengths.max() + 1]
    groups = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        mask = (lengths >= low) & (lengths < high)
        if mask.any():
            top = lengths[mask].max()
            groups.append((f"{low}" if top == low else f"{low}-{top}", mask))
    return groups


def main(argv):
    options = parse_options(argv, {
        "dataset": "amazon-office", "record_dir": "docs/benchmarks/head-to-head-fair", "reference": "LUMOS-llm",
        "runs": "FedSASRec,LUMOS-random,SASRec,LUMOS-random-central,LUMOS-embedding,LUMOS-no-views",
        "groups": "4", "output": ""})
    dataset, reference = options["dataset"], options["reference"]
    if not options["groups"].isdigit() or int(options["groups"]) < 1:
        raise SystemExit(f"error: --groups must be a whole number of at least 1, not {options['groups']!r}")
    _, _, per_user = read_record(options["record_dir"], dataset)
    if not per_user:
        raise SystemExit(f"error: no per-user values in {options['record_dir']}/{dataset}-per-user.npz")
    seeds = sorted(seed for run, seed in per_user if run == reference)
    runs = options["runs"].split(",")
    missing = [run for run in [reference, *runs] if not any(r == run for r, _ in per_user)]
    if missing:
        raise SystemExit(f"error: no per-user values for {', '.join(missing)} in {options['record_dir']}")
    lengths = history_lengths(dataset)
    size = len(per_user[reference, seeds[0]]["ndcg@20"])
    if len(lengths) != size:
        raise SystemExit(f"error: the dataset has {len(lengths)} test users, the record {size}: not the same split")
    groups = groups_by_length(lengths, int(options["groups"])) + [("all", np.ones(size, dtype=bool))]

    lines = [f"# {dataset}: {reference} against each run, by the test user's training-history length", "",
             f"Reproduce: `python benchmarks/by_history_length.py {' '.join(argv)}`", "",
             f"Per-user values: `{options['record_dir']}/{dataset}-per-user.npz` (seeds {', '.join(map(str, seeds))}; "
             f"a run is paired on the seeds both have). Cells: {reference}'s mean over the run's, then the p of the "
             f"Wilcoxon test over (seed, user) pairs and of the t-test over the seeds' means.", ""]
    for metric, title in METRICS.items():
        lines += [f"## {title}", "",
                  f"| training items | users | {reference} | " + " | ".join(f"vs {run}" for run in runs) + " |",
                  "|---" * (3 + len(runs)) + "|"]
        for label, mask in groups:
            cells = []
            for run in runs:
                paired = [s for s in seeds if (run, s) in per_user]
                mine = [per_user[reference, s][metric][mask] for s in paired]
                theirs = [per_user[run, s][metric][mask] for s in paired]
                cells.append(comparison_cell(mine, theirs) if paired else "n/a")
            mean = np.mean([per_user[reference, s][metric][mask].mean() for s in seeds])
            lines.append(f"| {label} | {mask.sum()} | {mean:.4f} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print_report(text, options["output"])


if __name__ == "__main__":
    main(sys.argv[1:])
