"""FederatedTrainer: rounds of federated LUMOS training on RecBole's Trainer interface.

``fit`` runs rounds (``epochs`` = rounds): the server side of a round lives in ``federated/server.py``, the
client side (data, views, private parameters, local training) in ``federated/client.py``; this module runs the
rounds, evaluates, logs (RecBole's logger and TensorBoard tags), checkpoints and stops a diverging run.
``federated: False`` trains the same model centrally (epochs over batches of users): LUMOS centralised.
Evaluation, early stopping on ``valid_metric`` and the best-model file are RecBole's
(``valid_smoothing: k`` applies the stopping rule to the mean of the last k validations). A checkpoint is written
after every round: rerunning the same command resumes from it with the same result.
"""
import math
import os
import time

import torch
from recbole.trainer import Trainer
from recbole.utils import early_stopping, set_color
from tqdm import tqdm

from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import create_aggregator
from recbole_lumos.federated.attacks import Exposure
from recbole_lumos.federated.client import Clients, chunks, private_prefixes, shared_parameters
from recbole_lumos.federated.server import Server
from recbole_lumos.resume import resume_file, save_atomically


class FederatedTrainer(Trainer):
    def __new__(cls, config, model):
        """``engine: flower``: the same trainer, its rounds run through Flower (recbole_lumos/flower/engine.py)."""
        if cls is FederatedTrainer and config["federated"] and config["engine"] == "flower":
            from recbole_lumos.flower.engine import FlowerTrainer

            cls = FlowerTrainer
        return super().__new__(cls)

    def __init__(self, config, model):
        super().__init__(config, model)
        self.federated = config["federated"]
        self.shared = shared_parameters(model, private_prefixes(config))
        self.diagnostics = None
        self.fakes_selected = None  # [fakes kept, kept, fakes received, received] since the last log line (Krum)
        if self.federated:  # the server optimizer sees the shared parameters only
            self.optimizer = self._build_optimizer(params=list(self.shared.values()))
        self.checkpoint_step = config["checkpoint_step"] or config["eval_step"]
        self.valid_smoothing = config["valid_smoothing"]
        self.run_started = time.time()  # the run's clock (quick_start sets its own start): resumed sessions add up
        self.valid_curve = []  # (seconds on that clock, round, valid score) at each validation, every session's
        self.resume_file = resume_file(config)

    # ----------------------------------------------------------------------------------------- one round / epoch
    def train_round(self, round_idx, generator):
        """One federated round (or central epoch); returns the mean (rec, tri) losses."""
        if self.federated:
            self.server.run_round(self.clients, generator, round_idx)
            self._count_fakes_selected()
            return self.clients.losses
        return self._central_epoch(round_idx, generator)

    def _count_fakes_selected(self):
        """Fake clients among the updates a selecting rule (Krum) kept, against their share of those it received,
        summed until the next log line. A simulation diagnostic: the server itself cannot tell a fake from a real
        one."""
        chosen = getattr(self.server.aggregator, "chosen", None)
        if chosen is None or not self.clients.fake:
            return
        order, fake = self.clients.update_order, self.clients.fake
        kept = [order[i] for i in chosen]
        counts = (sum(c in fake for c in kept), len(kept), sum(c in fake for c in order), len(order))
        self.fakes_selected = [a + b for a, b in zip(self.fakes_selected or [0] * 4, counts)]

    def _central_epoch(self, epoch_idx, generator):
        clients = self.clients
        order = torch.randperm(clients.num_clients, generator=generator).tolist()
        clients.redraw_views(order, epoch_idx)
        losses = []
        for ids in chunks(order, self.config["train_batch_size"]):
            batch = clients.with_negatives(clients.data.batch_of_users(ids), generator)
            loss, rec, tri = self.model.client_loss(batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(torch.stack([rec, tri]) * len(ids))
        return (torch.stack(losses).sum(0) / clients.num_clients).tolist()

    def _check_finite(self, round_idx, losses):
        """A diverged run stops with one line; the checkpoint of the last good round stays for inspection."""
        unit = "round" if self.federated else "epoch"
        bad = [name for name, value in zip(("rec", "tri"), losses) if not math.isfinite(value)]
        if not bad and all(torch.isfinite(p).all() for p in self.shared.values()):
            return
        what = f"{'/'.join(bad)} loss is {losses}" if bad else "the model update is not finite"
        lr = f"local_learning_rate {self.config['local_learning_rate']}, " if self.federated else ""
        kept = (f"; the checkpoint of {unit} {round_idx} is kept: {self.resume_file}"
                if os.path.isfile(self.resume_file) else "")
        raise LumosError(
            f"training diverged in {unit} {round_idx + 1}: {what}; the learning rate is likely too high "
            f"({lr}learning_rate {self.config['learning_rate']}): lower it{kept}"
        )

    def _log_tensorboard(self, round_idx, losses):
        """RecBole's tags where one exists: Loss/Train (the sum), Loss/Train0, Loss/Train1 (its parts, as for a
        calculate_loss tuple); plus the bytes each round moved."""
        rec, tri = losses
        parts = (rec, self.model.tri_weight * tri)
        self.tensorboard.add_scalar("Loss/Train", sum(parts), round_idx)
        for idx, part in enumerate(parts):
            self.tensorboard.add_scalar(f"Loss/Train{idx}", part, round_idx)
        if self.federated:
            self.tensorboard.add_scalar("Comm/bytes_down", self.server.bytes_down - self._bytes_before[0], round_idx)
            self.tensorboard.add_scalar("Comm/bytes_up", self.server.bytes_up - self._bytes_before[1], round_idx)

    # ----------------------------------------------------------------------------------------- resume
    def _bytes(self):
        return (self.server.bytes_down, self.server.bytes_up) if self.federated else (0, 0)

    def _save_round(self, round_idx):
        state = {
            "round": round_idx,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "private_bank": self.clients.private_bank,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "cur_step": self.cur_step,
            "saved_model_file": self.saved_model_file,
            "bytes": self._bytes(),
            "time_to_best": self.time_to_best,
            "elapsed": time.time() - self.run_started,
            "valid_curve": self.valid_curve,
        }
        save_atomically(state, self.resume_file)

    def _resume(self):
        if not os.path.isfile(self.resume_file):
            return
        state = torch.load(self.resume_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.clients.private_bank = state["private_bank"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.cur_step, self.saved_model_file = state["cur_step"], state["saved_model_file"]
        if self.federated:
            self.server.bytes_down, self.server.bytes_up = state["bytes"]
        self.time_to_best, self.valid_curve = state["time_to_best"], state.get("valid_curve", [])
        self.run_started -= state["elapsed"]  # the clock goes on from where the killed session left it
        self.start_epoch = self.rounds_run = state["round"] + 1
        self.logger.info(set_color("Resuming", "yellow") + f" from {self.resume_file} after round {state['round'] + 1}")

    # ----------------------------------------------------------------------------------------- fit
    def setup(self, train_dataset):
        """The client side (data, views, private parameters, local training) and the server: all fit() needs."""
        config = self.config
        self.clients = Clients(config, self.model, train_dataset, self.logger)
        if self.federated:
            aggregator = create_aggregator(config)
            if config["sum_cohort_updates"] and not aggregator.linear:
                self.logger.info(f"aggregator {config['aggregator']} needs each client's own update: "
                                 "clients hand over one delta each (sum_cohort_updates applies to fedavg only)")
            self.server = Server(self.shared, aggregator, self.optimizer, self.clients.num_clients,
                                 config["client_fraction"])
        topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
        self.exposure = Exposure(self.clients.targets, topk) if self.clients.targets is not None else None
        self.time_to_best = 0.0
        self.rounds_run = 0

    def privacy(self):
        """What a DP-FedAvg run spent so far ({epsilon, delta, ...}); None for any other run."""
        aggregator = self.server.aggregator if self.federated else None
        return aggregator.privacy(self.rounds_run) if hasattr(aggregator, "privacy") else None

    # ----------------------------------------------------------------------------------------- evaluation
    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if getattr(self, "exposure", None) is not None:
            self.exposure.add(scores)
        return interaction, scores, positive_u, positive_i

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation, plus ER@K of the attack targets (same scores, same pass) when they are set."""
        exposure = getattr(self, "exposure", None)
        if exposure is not None:
            exposure.reset()
        result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if exposure is not None and result is not None:
            result.update(exposure.result())
        return result

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        config = self.config
        self.setup(train_data._dataset)
        self._resume()
        unit = "round" if self.federated else "epoch"
        rounds = tqdm(range(self.start_epoch, self.epochs), desc=f"{config['model']} {unit}s", unit=unit,
                      initial=self.start_epoch, total=self.epochs, disable=not show_progress, dynamic_ncols=True)
        interval_start, interval_bytes = time.time(), self._bytes()
        for round_idx in rounds:
            seed = config["seed"] * 1_000_003 + round_idx  # a round's randomness depends on (seed, round) only
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            self.model.train()
            self._bytes_before = self._bytes()
            rec, tri = self.train_round(round_idx, generator)
            self.rounds_run = round_idx + 1
            self._check_finite(round_idx, (rec, tri))
            self._log_tensorboard(round_idx, (rec, tri))
            rounds.set_postfix(rec=f"{rec:.3f}", tri=f"{tri:.3f}", best=f"{self.best_valid_score:.4f}")
            stop = False
            if valid_data is not None and (round_idx + 1) % self.eval_step == 0:
                valid_score, valid_result = self._valid_epoch(valid_data)
                self.valid_curve.append((round(time.time() - self.run_started, 2), round_idx + 1, valid_score))
                # stopping and the best model follow the smoothed curve: one lucky evaluation does not pick the model
                recent = [score for _, _, score in self.valid_curve[-self.valid_smoothing:]]
                smoothed = sum(recent) / len(recent)
                self.best_valid_score, self.cur_step, stop, improved = early_stopping(
                    smoothed, self.best_valid_score, self.cur_step, self.stopping_step, self.valid_metric_bigger
                )
                if improved:
                    self.best_valid_result = valid_result
                    self.time_to_best = time.time() - self.run_started
                    if saved:
                        self._save_checkpoint(round_idx, verbose=False)
                self.tensorboard.add_scalar("Vaild_score", valid_score, round_idx)  # RecBole's tag, spelling included
                for metric, value in valid_result.items():
                    self.tensorboard.add_scalar(f"Valid/{metric}", value, round_idx)
                down, up = ((now - before) / self.eval_step / 2**20
                            for now, before in zip(self._bytes(), interval_bytes))
                if verbose:
                    self.logger.info(
                        f"{unit} {round_idx + 1}: rec loss {rec:.4f} tri loss {tri:.4f} | "
                        f"valid {self.valid_metric} {valid_score:.4f}"
                        + (f" (mean of the last {self.valid_smoothing} {smoothed:.4f}, "
                           if self.valid_smoothing > 1 else " (")
                        + f"best {self.best_valid_score:.4f}) | "
                        f"{(time.time() - interval_start) / self.eval_step:.2f} s/{unit}"
                        + (f" | per round: {self.server.per_round} clients, {down:.2f} MiB down, {up:.2f} MiB up"
                           if self.federated else "")
                        + (" | fakes kept {} of {} ({} of {} received)".format(*self.fakes_selected)
                           if self.fakes_selected else "")
                    )
                self.fakes_selected = None
                interval_start, interval_bytes = time.time(), self._bytes()
                if callback_fn:
                    callback_fn(round_idx, valid_score)
            if stop or (round_idx + 1) % self.checkpoint_step == 0:  # a round's randomness is (seed, round):
                self._save_round(round_idx)  # resuming from any saved round gives the same run
            if stop:
                self.logger.info(f"early stop after {unit} {round_idx + 1}: no better {self.valid_metric} "
                                 f"for {self.stopping_step} evaluations")
                break
        rounds.close()
        self.tensorboard.flush()
        if self.federated and self.model.uses_views:  # does the projection head learn? (docs/head-study.md)
            self.diagnostics = self.clients.head_diagnostics(torch.Generator().manual_seed(config["seed"]))
            figures = ", ".join(f"{k} {v:.4f}" for k, v in self.diagnostics.items())
            self.logger.info(set_color("projection head", "blue") + f": {figures}")
        if os.path.isfile(self.resume_file):
            os.remove(self.resume_file)  # finished: a rerun starts afresh
        if self.best_valid_result is None:  # never evaluated: keep the last model
            self._save_checkpoint(self.epochs - 1, verbose=False)
        return self.best_valid_score, self.best_valid_result
