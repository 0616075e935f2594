"""Benchmark of LLM view generation on this machine: speed against the LLM's own forward ceiling, and what the views
hold (share chosen by the LLM, distinct items, where each view's items reach the model's input).

    python benchmarks/bench_views.py                          # all ml-100k users, default settings (llm_dtype auto)
    python benchmarks/bench_views.py --users=128 --dtype=float32 --int8=True
    python benchmarks/bench_views.py --users=64 --workers=2   # Ray fan-out, 2 workers
    python benchmarks/bench_views.py --users=64 --threads=1   # torch threads (default: torch's, = cores)
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_views.py   # as on an AVX2-only CPU

Any other --key=value is a config key (e.g. --llm_complete_titles=False). Histories are the users' training items
(leave-one-out: the last two are held out), read through the plugin's own dataset. The views go to a fresh
temporary cache, so generation is measured, not cache hits. The validation item is read only for a diagnostic
(how often F names it); it never reaches the builder.
"""
import json
import os
import warnings
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' past_key_values rename, pandas

import numpy as np  # noqa: E402
import torch  # noqa: E402

import recbole_lumos  # noqa: E402,F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation  # noqa: E402

from recbole_lumos.augment.llm_views import build_llm_views  # noqa: E402
from recbole_lumos.federated.client_data import ClientData  # noqa: E402
from recbole_lumos.quick_start import build_config, cpu_class  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from script_options import exit_on_help  # noqa: E402  (benchmarks/)

OWN_FLAGS = {"users": 943, "dataset": "ml-100k", "show_users": 3, "dtype": None, "int8": None, "workers": None,
             "batch_size": None, "ceiling": True, "threads": None}


def machine():
    """The CPU class every result file names (quick_start.cpu_class), the core count, and any variable that
    restricts torch's kernels."""
    env = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    return f"{cpu_class()}, {os.cpu_count()} cores" + (f" (kernels restricted by {env})" if env else "")


@torch.no_grad()
def forward_ceiling(model, vocab, seconds=8.0):
    """Tokens/s of the LLM's full forward pass (output layer included), batch 8 x 256 and 32 x 1 + 256 cached."""
    out = {}
    x = torch.randint(100, vocab - 1, (8, 256))
    model(x)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model(x)
        n += 1
    out["prefill_8x256"] = 8 * 256 * n / (time.perf_counter() - start)
    cached = model(torch.randint(100, vocab - 1, (32, 256)), use_cache=True).past_key_values
    step = torch.randint(100, vocab - 1, (32, 1))
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 2:
        model(step, past_key_values=cached, use_cache=True)
        cached.crop(-1)  # back to 256 cached tokens
        n += 1
    out["decode_32x1"] = 32 * n / (time.perf_counter() - start)
    return out


def main(argv):
    exit_on_help(argv)  # otherwise "help" would pass as a config key and the benchmark would run
    own, settings = dict(OWN_FLAGS), {}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key in own:
            own[key] = value
        else:
            settings[key] = value
    for key in ("dtype", "int8", "workers", "batch_size"):
        if own[key] is not None:
            settings[f"llm_{key}"] = own[key]
    own["ceiling"] = str(own["ceiling"]).lower() not in ("false", "0")
    if own["threads"]:
        torch.set_num_threads(int(own["threads"]))
    from recbole.config.configurator import Config

    overrides = Config._convert_config_dict(None, settings)
    overrides.setdefault("views_cache_dir", tempfile.mkdtemp(prefix="views-"))
    config = build_config("LUMOS", own["dataset"], config_dict=overrides)
    train, valid, _ = data_preparation(config, create_dataset(config))
    histories = train._dataset.client_histories()
    users = sorted(histories)[: int(own["users"])]
    sample = {u: histories[u] for u in users}
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{own['dataset']}: {len(histories)} users; generating views for {len(sample)}")

    builder = build_llm_views(config, train._dataset)
    start = time.perf_counter()
    views = builder.build(sample)
    wall = time.perf_counter() - start
    stats = builder.stats()
    backend = builder.backend
    print(f"\nLLM {builder.backend_options.get('model')}: dtype {backend.dtype}, "
          f"int8 {builder.backend_options.get('int8')},"
          f" batch {builder.batch_size}, workers {builder.workers}, complete titles "
          f"{builder.decoding['complete_titles']}")
    print(json.dumps(stats, indent=1))
    per_client = wall / len(sample)
    print(f"-> {wall:.1f} s for {len(sample)} clients (LLM load included), {per_client:.3f} s/client; "
          f"all {len(histories)} clients: about {per_client * len(histories) / 60:.1f} min")
    if own["ceiling"]:
        ceiling = forward_ceiling(backend.model, backend.tokenizer.vocab_size)
        print("forward ceiling (full forward, same dtype, same threads): "
              + ", ".join(f"{k} {v:.0f} tok/s" for k, v in ceiling.items()))
        print(f"generation throughput {stats['tokens_per_s']:.0f} tok/s = "
              f"{stats['tokens_per_s'] / ceiling['prefill_8x256']:.0%} of the prefill ceiling")

    # Diagnostic only: F's items against the user's validation item (never given to the builder)
    valid_item = {int(u): int(i)
                  for u, i in zip(valid.dataset.inter_feat["user_id"], valid.dataset.inter_feat["item_id"])}
    hits = sum(valid_item.get(int(u), -1) in views[u].future[len(sample[u]):] for u in sample)
    print(f"diagnostic: F names the user's validation item for {hits} of {len(sample)} users")

    # Where the views' LLM items land in what the model reads (ClientData: the tensors the losses read)
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    data = ClientData(sample, [np.array([u]) for u in users], views, max_len)
    records = {r["client"]: r for r in builder.cache().load().values()}
    reached = {v: [0, 0] for v in ("future", "rephrase", "counterfactual")}
    for row, user in enumerate(users, start=1):
        tensors = data.views[row]
        for index, view in enumerate(reached):
            named = records[str(user)]["named"][view]
            reached[view][0] += sum(item in tensors[index].tolist() for item in named)
            reached[view][1] += len(named)
    print("LLM-named items present in the model's input tensors: "
          + ", ".join(f"{v} {a}/{b}" for v, (a, b) in reached.items()))
    for row, user in enumerate(users[: int(own["show_users"])], start=1):
        record = records[str(user)]
        print(f"\nuser {user}: anchor (last 12 of {len(sample[user])}) "
              f"{data.anchor[row][data.anchor[row] > 0].tolist()[-12:]}")
        for index, view in enumerate(reached):
            tensor = data.views[row][index]
            ids = tensor[tensor > 0].tolist()
            marks = [f"*{i}" if i in record["named"][view] else str(i) for i in ids[-12:]]
            print(f"  {view:14s} LLM named {record['named'][view]}; "
                  f"input (last 12 of {len(ids)}; * = LLM): {' '.join(marks)}")
        titles = builder.catalogue.titles
        for view in reached:
            print(f"  {view:14s} " + "; ".join(titles[i] for i in record["named"][view]))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    print(f"\ncommit {commit}, python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main(sys.argv[1:])
