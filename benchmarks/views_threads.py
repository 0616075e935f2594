"""Do LLM views depend on torch's thread count? The first 64 ml-100k clients, float32, at 1 and at 2 threads (the
free-core cap is bypassed so that each count is the one set).

    python benchmarks/views_threads.py
"""
import contextlib
import os
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402

import recbole_lumos  # noqa: E402,F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation  # noqa: E402

from recbole_lumos.augment import llm_views  # noqa: E402
from recbole_lumos.quick_start import build_config  # noqa: E402


def main():
    llm_views.threads_on_free_cores = lambda logger=None: contextlib.nullcontext()  # keep the count set below
    config = build_config("LUMOS", "ml-100k", config_dict={"llm_dtype": "float32"})
    train, _, _ = data_preparation(config, create_dataset(config))
    histories = train._dataset.client_histories()
    sample = {user: histories[user] for user in sorted(histories)[:64]}
    views = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        config["views_cache_dir"] = tempfile.mkdtemp(prefix="views-")  # generated, not read from a cache
        views[threads] = llm_views.build_llm_views(config, train._dataset).build(sample)
    same = sum(views[1][user] == views[2][user] for user in sample)
    print(f"clients with identical views at 1 and 2 threads: {same} of {len(sample)}")


if __name__ == "__main__":
    main()
