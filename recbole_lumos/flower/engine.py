"""``engine: flower``: the in-process trainer's rounds, run through Flower's simulation engine.

``FlowerTrainer`` is ``FederatedTrainer`` (its rounds loop, RecBole's evaluation on the server, early stopping on
``valid_metric``, logging, the best-model file) with one difference: ``fit`` starts a Flower simulation whose
ServerApp runs that loop, and each round goes to the clients through Flower's Grid (``strategy.py``) and is
trained by the ClientApp (``client_app.py``) on one SuperNode per client. The simulation runs on a local Ray or,
with ``ray_address``, on an existing Ray cluster; each Ray worker builds the client side once (the model, the
clients' data and views) and serves every SuperNode it is handed.

From the same seed it samples the same clients and applies the same aggregator and server step as in-process. A
client draws its dropout and negatives from (seed, round, client), where in-process clients share one generator
per round: without dropout and extra negatives the two engines give the same model (tests/test_flower.py),
otherwise the same training in distribution.

Not under Flower: the simulated attacks (``attack``, ``report_exposure``), resuming a killed run (the private
heads live on the SuperNodes, gone with the simulation) and the head diagnostics (they read every client's head).
"""
import copy
import os
import shutil
import sys
import tempfile
from logging import WARNING

import torch

from recbole_lumos.allocator import MALLOC_ENV
from recbole_lumos.augment.settings import setting
from recbole_lumos.compat import require_ray
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import create_aggregator
from recbole_lumos.federated.server import Server
from recbole_lumos.flower import require_flwr
from recbole_lumos.trainer import FederatedTrainer

_LOCAL = {}  # per Ray worker process: the LocalClient built from each simulation's payload


def flower_setting(config, key, default):
    """``flower_client_cpus`` / ``flower_client_gpus``: the run's value, else the default."""
    return default if config[key] is None else config[key]


class SimulatedClients:
    """The simulation's ``load``: (config, dataset, model) lie once in Ray's object store; each worker process
    builds its LocalClient from them at its first message and keeps it for every SuperNode it serves."""

    def __init__(self, payload, threads, gpus):
        self.payload, self.threads, self.gpus = payload, threads, gpus

    def __call__(self, context):
        key = self.payload.hex()
        if key not in _LOCAL:
            import ray

            import recbole_lumos  # noqa: F401  (RecBole patches in this process too)
            from recbole_lumos.flower.client_app import LocalClient

            config, dataset, model = ray.get(self.payload)
            torch.set_num_threads(max(1, int(self.threads)))
            config["device"] = torch.device("cuda" if self.gpus and torch.cuda.is_available() else "cpu")
            _LOCAL.clear()  # one simulation at a time per worker
            _LOCAL[key] = LocalClient(config, model.to(config["device"]), dataset)
        return _LOCAL[key]


class _OnTheSuperNodes:
    """What the server-side trainer holds of the clients under Flower: nothing. The private heads live on the
    SuperNodes, so the head diagnostics (which read every client's head) are not computed."""

    def head_diagnostics(self, generator):
        return {}


def population(config, dataset):
    """How many clients (SuperNodes): ``num_clients``, or one per user with a client history."""
    return config["num_clients"] or len(dataset.client_histories())


def start_ray(address):
    """Ray for the simulation (Flower runs on a started one): an existing cluster, else a local one in a short
    temporary folder, which is returned (None for a cluster)."""
    import ray

    if ray.is_initialized():  # a Ray this process started or joined already
        return None
    temp_dir = None if address else tempfile.mkdtemp(prefix="ray")  # Ray's socket paths: under 107 bytes
    python_path = os.pathsep.join(sys.path + [os.environ.get("PYTHONPATH", "")])  # as Flower's own start does
    ray.init(address=address, include_dashboard=False, logging_level=WARNING, _temp_dir=temp_dir,
             runtime_env={"env_vars": {"PYTHONPATH": python_path, **MALLOC_ENV}})
    return temp_dir


def check_supported(config):
    if config["attack"] != "none" or config["report_exposure"]:
        raise LumosError("engine flower does not simulate attacks (attack, report_exposure): "
                         "run them with engine inprocess")


class FlowerTrainer(FederatedTrainer):
    """FederatedTrainer whose rounds run through Flower's simulation engine (see the module's docstring)."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Train through a Flower simulation: one SuperNode per client, on a local Ray or ``ray_address``'s."""
        if not self.federated:
            raise LumosError("engine flower trains federated runs: with federated False, use engine inprocess")
        require_flwr()
        require_ray("engine flower")
        check_supported(self.config)
        import ray
        from flwr.serverapp import ServerApp
        from flwr.simulation import run_simulation

        from recbole_lumos.flower.client_app import client_app

        config, dataset = self.config, train_data._dataset
        cpus, gpus = flower_setting(config, "flower_client_cpus", 1), flower_setting(config, "flower_client_gpus", 0)
        outcome, server_app = [], ServerApp()

        @server_app.main()
        def main(grid, context):
            outcome.append(self.fit_on_grid(grid, train_data, valid_data, verbose, saved, show_progress, callback_fn))

        temp_dir = start_ray(setting(config, "ray_address"))
        try:
            payload = ray.put((config, dataset, copy.deepcopy(self.model).cpu()))
            run_simulation(server_app, client_app(SimulatedClients(payload, cpus, gpus)),
                           num_supernodes=population(config, dataset),
                           backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": gpus}})
        finally:
            if ray.is_initialized():
                ray.shutdown()  # (Flower's own end of the simulation shuts it down too)
            if temp_dir:
                shutil.rmtree(temp_dir, ignore_errors=True)
        if not outcome:
            raise LumosError("the Flower simulation ended before its ServerApp finished: see the log above")
        return outcome[0]

    def fit_on_grid(self, grid, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
                    callback_fn=None):
        """What a ServerApp runs: the in-process rounds loop, its rounds sent to the SuperNodes through ``grid``."""
        self.grid = grid
        return FederatedTrainer.fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)

    # ----------------------------------------------------------------------------------------- the rounds
    def setup(self, train_dataset):
        """The server side only: our Server (sampling, aggregator, server optimizer) over the SuperNodes found."""
        from recbole_lumos.flower.strategy import LumosStrategy, find_clients

        nodes = find_clients(self.grid, population(self.config, train_dataset))
        self.server = Server(self.shared, create_aggregator(self.config), self.optimizer, len(nodes),
                             self.config["client_fraction"])
        self.strategy = LumosStrategy(self.server, nodes)
        self.strategy.summary()
        self.clients = _OnTheSuperNodes()
        self.exposure = None
        self.time_to_best = 0.0
        self.rounds_run = 0

    def train_round(self, round_idx, generator):
        self.strategy.run_round(self.grid, generator, round_idx)
        return self.strategy.losses

    # a Flower run does not resume: the private heads are on the SuperNodes
    def _save_round(self, round_idx):
        pass

    def _resume(self):
        pass
