"""Rounds per second and memory of one config, in-process or through Flower (docs/scale.md).

    python -m recbole_lumos.flower.bench --engine=inprocess --model=LUMOS --dataset=ml-100k --rounds=10
    python -m recbole_lumos.flower.bench --engine=flower --model=LUMOS --dataset=ml-100k --rounds=10

Any other ``--key=value`` is a config setting (``--client_fraction=0.1``, ``--flower_client_cpus=1``). Training
only: no validation. Prints one JSON line: the seconds of each round, rounds per second (rounds after the first),
the trainer's setup (for Flower: waiting for the SuperNodes and asking each which client it holds, each Ray
worker building the client side), all of ``fit`` outside the rounds (Ray's start, the head diagnostics), the
peak resident memory of this process (VmHWM) and the peak, sampled every 0.5 s, of the proportional set size
(PSS: shared pages split between their processes) summed over this process and all its children (Ray's).
"""
import argparse
import json
import threading
import time

import psutil
import yaml
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed

from recbole_lumos import registry
from recbole_lumos.quick_start import build_config, cpu_class, peak_memory_mb
from recbole_lumos.trainer import FederatedTrainer


class TreeMemory(threading.Thread):
    """The peak of the summed PSS of this process and its descendants."""

    def __init__(self, interval=0.5):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, 0, True

    def run(self):
        me = psutil.Process()
        while self.running:
            total = 0
            for process in [me] + me.children(recursive=True):
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:  # ended meanwhile, or not ours to read
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("inprocess", "flower"), default="inprocess")
    parser.add_argument("--model", default="LUMOS")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rounds", type=int, default=10)
    args, rest = parser.parse_known_args(argv)
    settings = {"views": "random", "epochs": args.rounds, "state": "WARNING", "show_progress": False}
    for item in rest:
        key, _, value = item.lstrip("-").partition("=")
        settings[key] = yaml.safe_load(value)
    memory = TreeMemory()
    memory.start()
    started = time.time()
    config = build_config(args.model, args.dataset, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if args.engine == "flower":
        from recbole_lumos.flower.engine import FlowerTrainer as trainer_class
    else:
        trainer_class = FederatedTrainer
    trainer = trainer_class(config, model)
    rounds, train_round = [], trainer.train_round

    def timed_round(round_idx, generator):
        start = time.time()
        losses = train_round(round_idx, generator)
        rounds.append(time.time() - start)
        return losses

    trainer.train_round = timed_round
    setup_s, setup = [], trainer.setup

    def timed_setup(dataset):
        start = time.time()
        setup(dataset)
        setup_s.append(time.time() - start)

    trainer.setup = timed_setup
    loaded = time.time()
    trainer.fit(train_data, None, saved=False)
    total = time.time() - loaded
    memory.running = False
    memory.join()
    later = rounds[1:] or rounds
    print(json.dumps({
        "engine": args.engine, "model": args.model, "dataset": args.dataset,
        "clients_per_round": trainer.server.per_round, "clients": trainer.server.num_clients,
        "round_s": [round(s, 3) for s in rounds], "rounds_per_s": round(len(later) / sum(later), 3),
        "data_and_model_s": round(loaded - started, 1), "setup_s": round(setup_s[0], 1),
        "fit_outside_rounds_s": round(total - sum(rounds), 1),
        "peak_rss_mb_this_process": peak_memory_mb(), "peak_pss_mb_all_processes": round(memory.peak / 2**20),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": psutil.getloadavg(),
        "cpu": cpu_class(), "cpus": psutil.cpu_count(),
    }))


if __name__ == "__main__":
    main()
