"""Pool one dataset's per-user test values into a runs folder that benchmarks/significance.py reads: the seeds kept
in a committed record (<record_dir>/<dataset>-per-user.npz) and those whose runs folders are on this machine (fresh
confirmation seeds). A seed in both is taken from the record.

    python benchmarks/pool_seeds.py --dataset=amazon-office --record_dir=docs/benchmarks/head-to-head-fair \
        --runs_dir=results/head-to-head/amazon-office --runs=FedSASRec,LUMOS-no-views --output=/tmp/pooled-office
    python benchmarks/significance.py --runs_dir=/tmp/pooled-office --reference=LUMOS-no-views
"""
import glob
import os
import shutil
import sys

import numpy as np

from recbole_lumos.record import read_record
from script_options import parse_options  # benchmarks/


def main(argv):
    options = parse_options(argv, {"dataset": "amazon-office", "record_dir": "docs/benchmarks/head-to-head-fair",
                                   "runs_dir": "results/head-to-head/amazon-office", "runs": "",
                                   "output": "/tmp/pooled"})
    _, _, record = read_record(options["record_dir"], options["dataset"])  # {(run, seed): {metric: values}}
    shutil.rmtree(options["output"], ignore_errors=True)
    for run in filter(None, options["runs"].split(",")):
        seeds = {seed for kept_run, seed in record if kept_run == run}
        seeds |= {int(os.path.basename(f)[4:]) for f in glob.glob(os.path.join(options["runs_dir"], run, "seed*"))}
        for seed in sorted(seeds):
            kept = glob.glob(os.path.join(options["runs_dir"], run, f"seed{seed}", "*", "*.per_user.npz"))
            if (run, seed) in record:
                values, source = record[run, seed], "record"
            elif kept:
                values, source = dict(np.load(sorted(kept)[-1])), "runs folder"
            else:
                continue  # unfinished
            folder = os.path.join(options["output"], run, f"seed{seed}", options["dataset"])
            os.makedirs(folder)
            np.savez(os.path.join(folder, "pooled.per_user.npz"), **values)
            with open(os.path.join(folder, "pooled.json"), "w") as f:  # marks the seed finished
                f.write("{}")
            print(f"{run} seed {seed}: {source}")


if __name__ == "__main__":
    main(sys.argv[1:])
