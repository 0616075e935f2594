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


def rename_runs(output_dir, dataset, renames):
    """Give recorded runs another name (and other cells): ``renames`` = {old run name: {column: value}}, with at
    least "run". For rows published under a name that has since come to name other code: their numbers stay, under
    the name of the code that produced them. Rewrites the runs CSV, the curves CSV and the per-user archive."""
    taken = {run for run, _ in read_record(output_dir, dataset)[0]} & {new["run"] for new in renames.values()}
    if taken:
        raise ValueError(f"the record in {output_dir} already holds run(s) {', '.join(sorted(taken))}")
    for suffix, columns in (("runs.csv", None), ("curves.csv", ("run",))):
        path = os.path.join(output_dir, f"{dataset}-{suffix}")
        if not os.path.isfile(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        for row in rows:
            new = renames.get(row["run"], {})
            row.update({key: str(value) for key, value in new.items() if columns is None or key in columns})
        with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(path + ".tmp", path)
    path = per_user_path(output_dir, dataset)
    if os.path.isfile(path):
        _, _, per_user = read_record(output_dir, dataset)
        write_per_user(path, {(renames.get(run, {}).get("run", run), seed): values
                              for (run, seed), values in per_user.items()})


def write_per_user(path, per_user):
    """{(run, seed): {metric: array}} into one compressed archive (most users score 0: it packs small)."""
    arrays = {f"{run}|{seed}|{metric}": values
              for (run, seed), metrics in sorted(per_user.items()) for metric, values in metrics.items()}
    np.savez_compressed(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)
