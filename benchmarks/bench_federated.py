"""Speed of the federated simulation on ml-100k (round cost vs a centralised epoch; time to best).

    .venv/bin/python benchmarks/bench_federated.py round          # one full round vs one centralised epoch
    .venv/bin/python benchmarks/bench_federated.py convergence    # full LUMOS run vs RecBole SASRec, 10 epochs

Prints its figures; docs/speed.md records them with the machine they came from.
"""
import statistics
import sys
import time

import torch

import recbole_lumos  # noqa: F401
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lumos import registry
from recbole_lumos.quick_start import build_config, run


def trainer_for(model, **settings):
    config = build_config(model, "ml-100k", config_dict={"show_progress": False, "state": "WARNING", **settings})
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    trainer = registry.get_trainer(config["MODEL_TYPE"], model)(
        config, registry.get_model(model)(config, train._dataset))
    return trainer, train


def time_round_vs_epoch(model="LUMOS", repeats=3):
    """One round over all clients (fraction 1, 1 local epoch) vs one centralised epoch over the same sequences."""
    timings = {}
    for federated in (True, False):
        trainer, train = trainer_for(model, federated=federated, client_fraction=1.0, local_epochs=1, epochs=repeats,
                                     eval_step=10**6)
        trainer.setup(train._dataset)
        trainer.model.train()
        runs = []
        for r in range(repeats + 1):
            start = time.perf_counter()
            trainer.train_round(r, torch.Generator().manual_seed(r))
            runs.append(time.perf_counter() - start)
        timings["round" if federated else "epoch"] = statistics.median(runs[1:])  # first run warms up
        print(f"{'federated round (943 clients)' if federated else 'centralised epoch (943 users)'}: "
              f"{timings['round' if federated else 'epoch']:.2f} s (runs: {', '.join(f'{t:.2f}' for t in runs)})",
              flush=True)
    print(f"round / epoch = {timings['round'] / timings['epoch']:.2f} (target <= 2)")


def time_convergence():
    lumos = run("LUMOS", "ml-100k", config_dict={"show_progress": False})
    print(f"LUMOS: best validation after {lumos['time_to_best_s']} s, whole run {lumos['wall_time_s']} s, "
          f"test {lumos['test_result']}", flush=True)
    sasrec = run("SASRec", "ml-100k", config_dict={"epochs": 10, "show_progress": False})
    print(f"SASRec 10 epochs: wall {sasrec['wall_time_s']} s, test {sasrec['test_result']}")
    print(f"LUMOS time to best / SASRec 10 epochs = {lumos['time_to_best_s'] / sasrec['wall_time_s']:.2f} (target < 1)")


if __name__ == "__main__":
    torch.set_num_threads(2)
    {"round": time_round_vs_epoch, "convergence": time_convergence}[sys.argv[1] if len(sys.argv) > 1 else "round"]()
