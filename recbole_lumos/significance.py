"""Each test user's own NDCG@20 and HR@20, and the paired test that compares two runs over them.

A run writes its users' values beside its result file (``<result>.per_user.npz``); the benchmark pairs two runs by
(seed, user), the split being the same for every run, and reports the relative difference of the means and the
p-value of scipy's Wilcoxon signed-rank test (users with equal values drop out, its default).
"""
import numpy as np
from recbole.evaluator.metrics import NDCG, Hit
from scipy.stats import wilcoxon

PER_USER_METRICS = {"ndcg@20": NDCG, "hit@20": Hit}


def evaluate_per_user(trainer, data, **evaluate_args):
    """RecBole's evaluation of ``data`` (its averages, unchanged) and each user's values {metric: array}."""
    captured, evaluate = {}, trainer.evaluator.evaluate

    def keep(struct):  # the collected top-k matrix, before RecBole averages it
        captured["struct"] = struct
        return evaluate(struct)

    trainer.evaluator.evaluate = keep
    try:
        result = trainer.evaluate(data, **evaluate_args)
    finally:
        trainer.evaluator.evaluate = evaluate
    per_user = {}
    for name, metric_class in PER_USER_METRICS.items():
        metric, k = metric_class(trainer.config), int(name.split("@")[1])
        pos_index, pos_len = metric.used_info(captured["struct"])
        values = metric.metric_info(pos_index, pos_len) if metric_class is NDCG else metric.metric_info(pos_index)
        per_user[name] = values[:, k - 1]
    return result, per_user


def per_user_file(result_file):
    return result_file[: -len(".json")] + ".per_user.npz"


def save_per_user(result_file, per_user):
    np.savez(per_user_file(result_file), **per_user)


def load_per_user(result_file):
    """{metric: array} written beside a result file, or None (a run from before they were written)."""
    try:
        return dict(np.load(per_user_file(result_file)))
    except FileNotFoundError:
        return None


def paired_comparison(reference, other):
    """(relative difference of the means, Wilcoxon p) of two runs' paired per-user values."""
    reference, other = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    p = wilcoxon(reference, other).pvalue if np.any(reference != other) else 1.0
    return (reference.mean() - other.mean()) / other.mean(), float(p)
