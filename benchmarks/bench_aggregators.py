"""Seconds one round's aggregation takes, per rule, on random updates of a given shape (the server's own cost).

    .venv/bin/python benchmarks/bench_aggregators.py                       # amazon-office's LUMOS shape
    .venv/bin/python benchmarks/bench_aggregators.py --clients=99 --params=175000 --threads=2

Defaults: 515 clients a round (10 % of 4,905 users plus 5 % fake clients) x 258,240 shared parameters (LUMOS's
backbone over amazon-office's 2,421 item rows). ``sorted`` rows time the sort over the clients that the median and
the trimmed mean used before they selected instead; they are the reference the rules are checked against here.
Prints its figures; docs/robustness/amazon-office.md records them with the machine they came from.
"""
import math
import sys
import time

import torch

from recbole_lumos.federated.aggregators import FedAvg, Krum, Median, NormClip, TrimmedMean

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from script_options import parse_options  # noqa: E402

DEFAULTS = {"clients": 515, "params": 258240, "threads": 1, "repeats": 3}


def sorted_median(rows):
    ordered, n = rows.sort(0).values, rows.size(0)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def sorted_trimmed_mean(rows, ratio=0.1):
    k = math.floor(ratio * rows.size(0))
    return rows.sort(0).values[k : rows.size(0) - k].mean(0)


def seconds(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main(argv):
    opts = {k: int(v) for k, v in parse_options(argv, DEFAULTS).items()}
    torch.set_num_threads(opts["threads"])
    rows = torch.randn(opts["clients"], opts["params"], generator=torch.Generator().manual_seed(0)) * 1e-3
    weights = torch.ones(opts["clients"])

    def one_round(rule):
        rule.setup(opts["clients"], 1.0, opts["clients"], {"w": rows[0]})
        rule.start()
        rule.add({"w": rows}, weights)
        return rule.result()["w"]

    print(f"{opts['clients']} clients x {opts['params']:,} shared parameters, {opts['threads']} thread(s), "
          f"best of {opts['repeats']}; torch {torch.__version__}")
    rules = {"fedavg": FedAvg(), "norm_clip": NormClip(1.0), "krum (f 5, m 40)": Krum(5, 40),
             "median": Median(), "trimmed_mean (10 %)": TrimmedMean(0.1)}
    results = {}
    for name, rule in rules.items():
        results[name] = seconds(lambda: one_round(rule), opts["repeats"])
        print(f"{name:22s} {results[name][0]:7.2f} s")
    for name, reference in (("median", sorted_median), ("trimmed_mean (10 %)", sorted_trimmed_mean)):
        took, value = seconds(lambda: reference(rows), opts["repeats"])
        gap = (value - results[name][1]).abs().max().item()
        print(f"{name + ' sorted':22s} {took:7.2f} s   ({took / results[name][0]:.1f}x the selection; "
              f"largest difference {gap:.1e})")


if __name__ == "__main__":
    main(sys.argv[1:])
