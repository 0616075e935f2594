"""FederatedTrainer: rounds of federated LUMOS training on RecBole's Trainer interface.

``fit`` runs rounds (``epochs`` = rounds); each round the server samples ``client_fraction`` of the clients,
the cohort trainer runs their local training in parallel, the server aggregates the shared-parameter updates.
Each client's private parameters (the projection head) live in ``private_bank``, one row per client.
``federated: False`` trains the same model centrally (epochs over batches of users): LUMOS centralised, CL4SRec.
Evaluation, early stopping on ``valid_metric`` and the best-model file are RecBole's. A checkpoint is written
after every round: rerunning the same command resumes from it with the same result.
"""
import hashlib
import os
import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import early_stopping, set_color
from tqdm import tqdm

from recbole_lumos.augment import create_view_builder
from recbole_lumos.data.partition import dominant_labels, partition_clients
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import create_aggregator
from recbole_lumos.federated.client import CohortTrainer
from recbole_lumos.federated.client_data import ClientData, random_negatives
from recbole_lumos.federated.server import Server

_NOT_IN_RESUME_KEY = {"show_progress", "state", "epochs", "results_dir", "checkpoint_dir", "device"}


def chunks(values, size):
    return [values[i : i + size] for i in range(0, len(values), size)]


class FederatedTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.federated = config["federated"]
        self.shared = {n: p for n, p in model.named_parameters() if not model.is_private(n)}
        if self.federated:  # the server optimizer sees the shared parameters only
            if not 0 < config["client_fraction"] <= 1:
                raise LumosError(f"client_fraction must be in (0, 1], got {config['client_fraction']}")
            self.optimizer = self._build_optimizer(params=list(self.shared.values()))
        self.resume_file = os.path.join(self.checkpoint_dir, f"{config['model']}-{config['dataset']}-{self._run_key()}.resume.pth")

    def _run_key(self):
        settings = sorted((k, str(v)) for k, v in self.config.final_config_dict.items() if k not in _NOT_IN_RESUME_KEY)
        return hashlib.md5(repr(settings).encode()).hexdigest()[:12]

    # ----------------------------------------------------------------------------------------- setup
    def _client_data(self, train_dataset):
        config = self.config
        histories = train_dataset.client_histories()
        users = np.array(sorted(histories))
        labels = None
        if config["client_partition"] == "dirichlet":
            field = config["dirichlet_field"] or config["item_genre_field"]
            if field not in train_dataset.item_feat.columns:
                raise LumosError(f"dirichlet_field '{field}' is not an item feature: add it to load_col.item")
            labels = dominant_labels(histories, users, train_dataset.item_feat[field].numpy())
        clients = partition_clients(
            users, config["num_clients"], config["client_partition"], config["dirichlet_alpha"], labels, config["seed"]
        )
        views = None
        if self.model.uses_views:
            builder = create_view_builder(config, train_dataset)
            views = builder.build(histories)
            self.logger.info(set_color("views", "blue") + f": {builder.name} {builder.stats()}")
        self.logger.info(set_color("clients", "blue") + f": {len(clients)} holding {len(users)} users")
        return ClientData(histories, clients, views, config["MAX_ITEM_LIST_LENGTH"])

    def _with_negatives(self, batch, generator):
        if self.model.uses_views:
            batch["negatives"] = random_negatives(
                batch["anchor"], self.config["tri_extra_negatives"], self.model.n_items, generator
            )
        return {k: v.to(self.device) for k, v in batch.items()}

    # ----------------------------------------------------------------------------------------- one round / epoch
    def _federated_round(self, data, generator):
        clients = self.server.sample_clients(generator)
        sent = None if self.sum_cohorts else self.server.broadcast()  # the summed path reads the live model
        self.server.start_round()
        losses = []
        for cohort in chunks(data.order_by_size(clients), self.config["cohort_size"]):
            private = {k: bank[cohort] for k, bank in self.private_bank.items()}
            weights = data.num_samples[cohort].to(self.device)
            if self.sum_cohorts:
                batch = self._with_negatives(data.batch_of_users(cohort), generator)
                update, private, loss = self.clients.summed_update(private, batch, weights)
            else:
                batch = self._with_negatives(data.cohort(cohort), generator)
                update, private, loss = self.clients.local_update(sent, private, batch, weights)
            for k, value in private.items():  # stays on the client side
                self.private_bank[k][cohort] = value
            self.server.receive(update)
            losses.append(loss * len(cohort))
        self.server.finish_round()
        self.bytes_down += len(clients) * self.server.payload_bytes()
        self.bytes_up += len(clients) * self.server.payload_bytes()
        return (torch.stack(losses).sum(0) / len(clients)).tolist()

    def _central_epoch(self, data, generator):
        order = torch.randperm(data.num_clients, generator=generator).tolist()
        losses = []
        for ids in chunks(order, self.config["train_batch_size"]):
            batch = self._with_negatives(data.batch_of_users(ids), generator)
            loss, rec, tri = self.model.client_loss(batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(torch.stack([rec, tri]) * len(ids))
        return (torch.stack(losses).sum(0) / data.num_clients).tolist()

    # ----------------------------------------------------------------------------------------- resume
    def _save_round(self, round_idx):
        state = {
            "round": round_idx,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "private_bank": self.private_bank,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "cur_step": self.cur_step,
            "saved_model_file": self.saved_model_file,
            "bytes": (self.bytes_down, self.bytes_up),
            "time_to_best": self.time_to_best,
            "elapsed": time.time() - self.fit_start,
        }
        torch.save(state, self.resume_file + ".tmp")
        os.replace(self.resume_file + ".tmp", self.resume_file)  # a kill mid-write leaves the last good one

    def _resume(self):
        if not os.path.isfile(self.resume_file):
            return
        state = torch.load(self.resume_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.private_bank = state["private_bank"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.cur_step, self.saved_model_file = state["cur_step"], state["saved_model_file"]
        self.bytes_down, self.bytes_up = state["bytes"]
        self.time_to_best, self.elapsed_before = state["time_to_best"], state["elapsed"]
        self.start_epoch = state["round"] + 1
        self.logger.info(set_color("Resuming", "yellow") + f" from {self.resume_file} after round {state['round'] + 1}")

    # ----------------------------------------------------------------------------------------- fit
    def setup(self, train_dataset):
        """Clients, their data and views, private parameters, server and cohort trainer: all fit() needs."""
        config = self.config
        data = self._client_data(train_dataset)
        self.private_bank = {
            n: p.detach().unsqueeze(0).repeat(data.num_clients, *[1] * p.dim())
            for n, p in self.model.named_parameters()
            if self.model.is_private(n)
        }
        if self.federated:
            self.server = Server(
                self.shared, create_aggregator(config["aggregator"]), self.optimizer, data.num_clients, config["client_fraction"]
            )
            self.clients = CohortTrainer(self.model, config["local_epochs"], config["local_learner"], config["local_learning_rate"])
            self.sum_cohorts = config["sum_cohort_updates"] and self.clients.can_sum and self.server.aggregator.linear
        self.bytes_down = self.bytes_up = 0
        self.time_to_best = self.elapsed_before = 0.0
        return data

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        config = self.config
        data = self.setup(train_data._dataset)
        self._resume()
        step = self._federated_round if self.federated else self._central_epoch
        unit = "round" if self.federated else "epoch"
        rounds = tqdm(range(self.start_epoch, self.epochs), desc=f"{config['model']} {unit}s", unit=unit,
                      initial=self.start_epoch, total=self.epochs, disable=not show_progress, dynamic_ncols=True)
        interval_start, interval_bytes = time.time(), (self.bytes_down, self.bytes_up)
        self.fit_start = time.time() - self.elapsed_before  # wall time counts across resumed sessions
        for round_idx in rounds:
            seed = config["seed"] * 1_000_003 + round_idx  # a round's randomness depends on (seed, round) only
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            self.model.train()
            rec, tri = step(data, generator)
            rounds.set_postfix(rec=f"{rec:.3f}", tri=f"{tri:.3f}", best=f"{self.best_valid_score:.4f}")
            stop = False
            if valid_data is not None and (round_idx + 1) % self.eval_step == 0:
                valid_score, valid_result = self._valid_epoch(valid_data)
                self.best_valid_score, self.cur_step, stop, improved = early_stopping(
                    valid_score, self.best_valid_score, self.cur_step, self.stopping_step, self.valid_metric_bigger
                )
                if improved:
                    self.best_valid_result = valid_result
                    self.time_to_best = time.time() - self.fit_start
                    if saved:
                        self._save_checkpoint(round_idx, verbose=False)
                down = (self.bytes_down - interval_bytes[0]) / self.eval_step / 2**20
                up = (self.bytes_up - interval_bytes[1]) / self.eval_step / 2**20
                if verbose:
                    self.logger.info(
                        f"{unit} {round_idx + 1}: rec loss {rec:.4f} tri loss {tri:.4f} | "
                        f"valid {self.valid_metric} {valid_score:.4f} (best {self.best_valid_score:.4f}) | "
                        f"{(time.time() - interval_start) / self.eval_step:.2f} s/{unit}"
                        + (f" | per round: {self.server.per_round} clients, {down:.2f} MiB down, {up:.2f} MiB up" if self.federated else "")
                    )
                interval_start, interval_bytes = time.time(), (self.bytes_down, self.bytes_up)
                if callback_fn:
                    callback_fn(round_idx, valid_score)
            self._save_round(round_idx)
            if stop:
                self.logger.info(f"early stop after {unit} {round_idx + 1}: no better {self.valid_metric} for {self.stopping_step} evaluations")
                break
        rounds.close()
        if os.path.isfile(self.resume_file):
            os.remove(self.resume_file)  # finished: a rerun starts afresh
        if self.best_valid_result is None:  # never evaluated: keep the last model
            self._save_checkpoint(self.epochs - 1, verbose=False)
        return self.best_valid_score, self.best_valid_result
