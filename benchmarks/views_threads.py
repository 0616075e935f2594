"""Do a client's LLM views depend on torch's thread count, or on the clients it shares a batch with? The first 64
ml-100k clients at 1 and at 2 threads (the free-core cap is bypassed so that each count is the one set), then the
same 64 at 2 threads in an interleaved order (0, 32, 1, 33, ...), so that half of each client's batch-mates change
and every batch pads to another length.

    python benchmarks/views_threads.py [--dtype=float32|bfloat16]
"""
import contextlib
import os
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402

import recbole_lumos  # noqa: E402,F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation  # noqa: E402

from recbole_lumos.augment import llm_views  # noqa: E402
from recbole_lumos.quick_start import build_config  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from script_options import parse_options  # noqa: E402  (benchmarks/)


def generate(config, dataset, histories, threads):
    torch.set_num_threads(threads)
    config["views_cache_dir"] = tempfile.mkdtemp(prefix="views-")  # generated, not read from a cache
    return llm_views.build_llm_views(config, dataset).build(histories)


def main():
    options = parse_options(sys.argv[1:], {"dtype": "float32"})
    if options["dtype"] not in ("float32", "bfloat16"):
        raise SystemExit(f"error: --dtype must be float32 or bfloat16, got {options['dtype']!r}")
    llm_views.threads_on_free_cores = lambda logger=None: contextlib.nullcontext()  # keep the count set below
    config = build_config("LUMOS", "ml-100k", config_dict={"llm_dtype": options["dtype"]})
    train, _, _ = data_preparation(config, create_dataset(config))
    histories = train._dataset.client_histories()
    clients = sorted(histories)[:64]
    in_order = {user: histories[user] for user in clients}
    interleaved = {user: histories[user] for pair in zip(clients[:32], clients[32:]) for user in pair}
    one_thread = generate(config, train._dataset, in_order, threads=1)
    two_threads = generate(config, train._dataset, in_order, threads=2)
    other_mates = generate(config, train._dataset, interleaved, threads=2)
    same_threads = sum(one_thread[user] == two_threads[user] for user in clients)
    same_mates = sum(two_threads[user] == other_mates[user] for user in clients)
    print(f"{options['dtype']}: clients with identical views at 1 and 2 threads: {same_threads} of {len(clients)}; "
          f"in other batches: {same_mates} of {len(clients)}")


if __name__ == "__main__":
    main()
