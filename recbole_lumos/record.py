"""A benchmark's committed record: what its report is rebuilt from when a run's folder is not on the machine.

Runs folders are git-ignored and a fresh clone has none, so a report written by one machine could not be extended
on another without rerunning every row. The report's own files are the record: ``<dataset>-runs.csv`` (one row per
run and seed), ``<dataset>-curves.csv`` and ``<dataset>-per-user.npz`` (each finished run's per-test-user values,
which the paired tests need). A (run, seed) with no result on disk is read from them.
"""
import csv
import os

import numpy as np


def _value(text):
    """A CSV cell as the result file held it: int, float, None for an empty cell, else the string."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_csv(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{key: _value(text) for key, text in row.items()} for row in csv.DictReader(f)]


def per_user_path(output_dir, dataset):
    return os.path.join(output_dir, f"{dataset}-per-user.npz")


def read_record(output_dir, dataset):
    """({(run, seed): row}, {(run, seed): [curve points]}, {(run, seed): {metric: array}}) of the finished runs."""
    rows = {(r["run"], r["seed"]): r for r in _read_csv(os.path.join(output_dir, f"{dataset}-runs.csv"))
            if r.get("status") == "ok"}
    curves = {}
    for point in _read_csv(os.path.join(output_dir, f"{dataset}-curves.csv")):
        curves.setdefault((point["run"], point["seed"]), []).append(point)
    per_user = {}
    path = per_user_path(output_dir, dataset)
    if os.path.isfile(path):
        with np.load(path) as archive:
            for key in archive.files:  # "<run>|<seed>|<metric>"
                run, seed, metric = key.split("|")
                per_user.setdefault((run, int(seed)), {})[metric] = archive[key]
    return rows, curves, per_user


def write_per_user(path, per_user):
    """{(run, seed): {metric: array}} into one compressed archive (most users score 0: it packs small)."""
    arrays = {f"{run}|{seed}|{metric}": values
              for (run, seed), metrics in sorted(per_user.items()) for metric, values in metrics.items()}
    np.savez_compressed(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)
