"""Benchmark of the view generators on ml-100k (RecBole's bundled copy), on this machine's CPU.

    python benchmarks/bench_views.py                   # SmolLM2 views for all 943 users, then embedding views
    python benchmarks/bench_views.py --llm-users 20    # a sample, extrapolated to 943 users
    python benchmarks/bench_views.py --llm-users 0     # embedding views only

Histories are each user's chronological items minus the last two (validation, test), as in training. The LLM part
writes to a fresh temporary cache (pass --cache-dir to reuse one), so it measures generation, not cache hits.
"""
import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import recbole_lumos  # noqa: E402,F401  (patches RecBole for numpy 2 / torch >= 2.6)
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset  # noqa: E402

from recbole_lumos.augment.embedding_views import build_embedding_views  # noqa: E402
from recbole_lumos.augment.llm_views import build_llm_views  # noqa: E402
from recbole_lumos.augment.settings import setting  # noqa: E402


def training_histories(dataset):
    """{user id: items oldest first, minus the last two} from the dataset's interactions."""
    uid, iid, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
    frame = dataset.inter_feat[[uid, iid, time_field]].sort_values([uid, time_field], kind="stable")
    return {int(u): group[iid].astype(int).tolist()[:-2] for u, group in frame.groupby(uid)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-users", type=int, default=943, help="users given to SmolLM2 (0: skip the LLM)")
    parser.add_argument("--batch-size", type=int, default=None, help="llm_batch_size (default: augment.yaml)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="llm_max_new_tokens")
    parser.add_argument("--dtype", default=None, help="llm_dtype")
    parser.add_argument("--cache-dir", default=None, help="views_cache_dir (default: a fresh temporary folder)")
    parser.add_argument("--show", type=int, default=3, help="print this many raw LLM answers")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole would read our --flags as its own config
    torch.set_num_threads(min(2, os.cpu_count()))

    overrides = {"llm_batch_size": args.batch_size, "llm_max_new_tokens": args.max_new_tokens,
                 "llm_dtype": args.dtype, "views_cache_dir": args.cache_dir or tempfile.mkdtemp(prefix="views-")}
    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "train_neg_sample_args": None,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "movie_title", "release_year", "class"]},
        **{k: v for k, v in overrides.items() if v is not None}})
    dataset = create_dataset(config)
    histories = training_histories(dataset)
    print(f"ml-100k: {len(histories)} users, {dataset.item_num - 1} items, "
          f"{sum(map(len, histories.values()))} training interactions; torch threads {torch.get_num_threads()}")

    if args.llm_users > 0:
        sample = dict(list(histories.items())[: args.llm_users])
        start = time.perf_counter()
        builder = build_llm_views(config, dataset)
        setup = time.perf_counter() - start
        builder.build(sample)
        wall = time.perf_counter() - start
        stats = builder.stats()
        shown = ", ".join(f"{k} {setting(config, k)}" for k in ("llm_model", "llm_dtype", "llm_batch_size",
                                                                  "llm_max_new_tokens", "llm_do_sample"))
        print(f"\nLLM views ({shown}): {len(sample)} users in {wall:.1f} s (setup {setup:.1f} s; the LLM loads "
              f"lazily, inside generation)")
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}, indent=1))
        per_user = (wall - setup) / len(sample)
        print(f"-> {per_user:.2f} s/user; all {len(histories)} users: about {per_user * len(histories) / 60:.1f} min")
        answers = builder.cache_for(sample).load()[0]
        for record in list(answers.values())[: args.show]:
            print(f"--- user {record['client']} answer:\n{record['answer']}")

    start = time.perf_counter()
    builder = build_embedding_views(config, dataset)
    views = builder.build(histories)
    wall = time.perf_counter() - start
    print(f"\nEmbedding views: {len(views)} users in {wall:.1f} s (encoder load + item encoding included); "
          f"build alone {builder.stats()['seconds']:.1f} s")


if __name__ == "__main__":
    main()
