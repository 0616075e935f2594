"""How federated training scales with the number of clients: per-round time and memory for synthetic populations.

    python benchmarks/bench_scale.py                          # 1k, 10k and 100k clients
    python benchmarks/bench_scale.py --clients=10000 --rounds=5 --model=FedSASRec
    python benchmarks/bench_scale.py --clients=100000 --rounds=2 --client_fraction=0.01

Each population is a synthetic atomic dataset (one client per user, 5-30 items per user, Zipf popularity over a
20,000-item catalogue) loaded through the plugin's own pipeline. For each size it prints the time to build the
client side (histories, windows, private heads), the mean time of a round at `--client_fraction` (default 10 %),
and the memory: peak RSS, the client tensors, the private-head bank. The first round is not counted when there
are several (it pays one-off costs). No evaluation is run (full ranking of 100k
users is RecBole's evaluator, not the federated part).
"""
import os
import resource
import sys
import tempfile
import time

import numpy as np
import torch

import recbole_lumos  # noqa: F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation

from recbole_lumos import registry
from recbole_lumos.quick_start import build_config
from script_options import parse_options  # benchmarks/

ITEMS = 20_000


def write_population(root, users, seed=0):
    """users x 5-30 chronological items, Zipf(1.1) popularity; returns the data_path."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "synthetic")
    os.makedirs(folder, exist_ok=True)
    popularity = 1 / np.arange(1, ITEMS + 1) ** 1.1
    popularity /= popularity.sum()
    lengths = rng.integers(5, 31, users)
    items = rng.choice(np.arange(1, ITEMS + 1), size=int(lengths.sum()), p=popularity)
    owners = np.repeat(np.arange(1, users + 1), lengths)
    stamps = np.arange(len(items))
    with open(os.path.join(folder, "synthetic.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(owners, items, stamps))
    return root


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(users, rounds, model_name, root, client_fraction):
    start = time.perf_counter()
    data_path = write_population(root, users)
    config = build_config(model_name, "synthetic", config_dict={
        "data_path": data_path, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "views": "random",
        "show_progress": False, "state": "WARNING", "eval_step": 10**6, "client_fraction": client_fraction})
    train, _, _ = data_preparation(config, create_dataset(config))
    loaded = time.perf_counter() - start
    model = registry.get_model(model_name)(config, train._dataset)
    trainer = registry.get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    start = time.perf_counter()
    trainer.setup(train._dataset)
    setup = time.perf_counter() - start
    clients = trainer.clients
    tensors = sum(t.numel() * t.element_size() for t in (clients.data.windows, clients.data.anchor, clients.data.views))
    bank = sum(t.numel() * t.element_size() for t in clients.private_bank.values())
    times = []
    for round_idx in range(rounds):
        generator = torch.Generator().manual_seed(round_idx)
        start = time.perf_counter()
        trainer.train_round(round_idx, generator)
        times.append(time.perf_counter() - start)
    per_round = trainer.server.per_round
    print(f"| {users:,} | {model_name} | {per_round:,} | {np.mean(times[1:] or times):.2f} | {setup:.1f} | "
          f"{loaded:.0f} | {tensors / 2**20:.0f} | {bank / 2**20:.0f} | {rss_mb():.0f} |", flush=True)


def main(argv):
    options = parse_options(argv, {"clients": "1000,10000,100000", "rounds": "4", "model": "LUMOS",
                                   "client_fraction": "0.1"})
    sys.argv = sys.argv[:1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| clients | model | clients per round | s per round | client-side setup s | dataset load s | "
          "client tensors MiB | private bank MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for users in map(int, options["clients"].split(",")):
        with tempfile.TemporaryDirectory() as root:
            measure(users, int(options["rounds"]), options["model"], root, float(options["client_fraction"]))


if __name__ == "__main__":
    main(sys.argv[1:])
