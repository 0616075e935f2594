"""Each test user's own NDCG@20 and HR@20, and the paired tests that compare two runs over them.

A run writes its users' values beside its result file (``<result>.per_user.npz``); the benchmark pairs two runs by
(seed, user), the split being the same for every run, and reports the relative difference of the means and two
p-values:
- over users: scipy's Wilcoxon signed-rank test on the pooled (seed, user) pairs (users with equal values drop
  out, its default). It sees how users differ, not how training runs differ: on ml-100k a +6.5 % at p 0.048 over
  3 seeds' users was -4.3 % on 3 fresh seeds (docs/benchmarks/head-to-head-fair/ml-100k.md);
- over seeds: scipy's paired t-test on the seeds' means (seed s of one run against seed s of the other), which
  sees the run-to-run noise; with 3 seeds it has little power, so read a small p of the first with a large p of
  the second as "not shown".
"""
import numpy as np
from recbole.evaluator.metrics import NDCG, Hit
from scipy.stats import ttest_rel, wilcoxon

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


def seed_comparison(reference_by_seed, other_by_seed):
    """p of a paired t-test over the seeds' means of two runs' per-user values (lists in the same seed order), or
    None with fewer than two seeds or the same difference on every seed (no spread to test)."""
    mine, theirs = [np.mean(a) for a in reference_by_seed], [np.mean(b) for b in other_by_seed]
    if len(mine) < 2:
        return None
    differences = np.subtract(mine, theirs)
    if np.allclose(differences, differences[0], rtol=1e-9, atol=1e-12):  # no spread: t is 0/0 or x/0, not a test
        return 1.0 if np.allclose(differences, 0, atol=1e-12) else None
    p = ttest_rel(mine, theirs).pvalue
    return float(p) if np.isfinite(p) else None
