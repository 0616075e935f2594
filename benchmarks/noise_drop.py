"""Which model loses less to noisy logs: each seed's relative drop from r = 0 to r, and a paired t-test over the
seeds between every two models' drops (the robustness target: LUMOS degrades less than FedSASRec).

    python benchmarks/noise_drop.py --record_dir=docs/robustness --dataset=amazon-office --ratio=0.3 \
        --models=LUMOS-embedding,LUMOS-llm,FedSASRec,LUMOS-random

Reads a robustness benchmark's record (<record_dir>/<dataset>-runs.csv, rows '<model>' and '<model>-noise<ratio>',
with recbole_lumos.record.read_record); seeds pair models because a
seed fixes the split and the noise for every model. Only seeds where every model has both rows are used.
"""
import itertools
import os
import sys

from scipy.stats import ttest_rel

from recbole_lumos.record import read_record
from script_options import parse_options  # benchmarks/

METRICS = {"ndcg@20": "NDCG@20", "hit@20": "HR@20"}


def main(argv):
    options = parse_options(argv, {"record_dir": "docs/robustness", "dataset": "amazon-office", "ratio": "0.3",
                                   "models": "LUMOS-embedding,LUMOS-llm,FedSASRec,LUMOS-random"})
    runs_csv = os.path.join(options["record_dir"], f"{options['dataset']}-runs.csv")
    if not os.path.isfile(runs_csv):
        raise SystemExit(f"error: no runs CSV at {runs_csv}")
    rows, _, _ = read_record(options["record_dir"], options["dataset"])  # {(run, seed): row} of the finished runs
    models = options["models"].split(",")
    noisy = {m: f"{m}-noise{options['ratio']}" for m in models}
    seeds = sorted({s for _, s in rows if all((m, s) in rows and (noisy[m], s) in rows for m in models)})
    if len(seeds) < 2:
        raise SystemExit(f"error: {len(seeds)} seed(s) with every model at r = 0 and r = {options['ratio']}")
    print(f"Relative drop from r = 0 to r = {options['ratio']}, seeds {', '.join(map(str, seeds))} "
          f"(`python benchmarks/noise_drop.py {' '.join(argv)}`)\n")
    for metric, name in METRICS.items():
        drops = {m: [float(rows[noisy[m], s][metric]) / float(rows[m, s][metric]) - 1 for s in seeds] for m in models}
        print(f"| {name} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |\n|---|" + "---|" * (len(seeds) + 1))
        for m in models:
            print(f"| {m} | " + " | ".join(f"{d:+.1%}" for d in drops[m]) + f" | {sum(drops[m]) / len(seeds):+.1%} |")
        print(f"\n| {name}: A against B | A loses less by (points, mean over seeds) | p, paired t-test over seeds |"
              "\n|---|---|---|")
        for a, b in itertools.combinations(models, 2):
            gap = sum(x - y for x, y in zip(drops[a], drops[b])) / len(seeds)
            print(f"| {a} vs {b} | {gap * 100:+.1f} | {ttest_rel(drops[a], drops[b]).pvalue:.2g} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
