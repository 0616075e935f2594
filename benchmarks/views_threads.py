"""Do LLM views depend on torch's thread count? The first 64 ml-100k clients, float32, at 1 and at 2 threads
(the free-core cap is bypassed so that each count is the one set). Usage: python benchmarks/views_threads.py"""
import contextlib, os, tempfile, warnings
os.environ.setdefault("HF_HUB_OFFLINE", "1"); warnings.filterwarnings("ignore")
import torch
import recbole_lumos  # noqa: F401
from recbole.data import create_dataset, data_preparation
from recbole_lumos.augment import llm_views
from recbole_lumos.quick_start import build_config

llm_views.threads_on_free_cores = lambda logger=None: contextlib.nullcontext()  # keep the count set below
config = build_config("LUMOS", "ml-100k", config_dict={"llm_dtype": "float32"})
train, _, _ = data_preparation(config, create_dataset(config))
histories = train._dataset.client_histories()
sample = {u: histories[u] for u in sorted(histories)[:64]}
views = {}
for threads in (1, 2):
    torch.set_num_threads(threads)
    config["views_cache_dir"] = tempfile.mkdtemp()
    views[threads] = llm_views.build_llm_views(config, train._dataset).build(sample)
same = sum(views[1][u] == views[2][u] for u in sample)
print(f"clients with identical views at 1 and 2 threads: {same} of {len(sample)}")
