"""Resuming an interrupted run: where its resume file lives, and resume for RecBole's own trainers.

Rerunning the command of a killed run continues it from its last checkpoint with the same result. The plugin's
``FederatedTrainer`` checkpoints itself (every ``checkpoint_step`` rounds). RecBole's trainers (SASRec, GRU4Rec,
BERT4Rec, ...) save only the best model, and ``Trainer.resume_checkpoint`` restores neither the random states
(dropout, the train loader's shuffle) nor the best model's file name, so ``Resumable`` adds a resume file written
after every validation: model, optimizer, early-stopping state, best-model file, random states, the run's clock
and validation curve. The file is removed when training ends; the key in its name changes with any setting, so a
changed command starts afresh.
"""
import hashlib
import os
import random
import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

_NOT_IN_RESUME_KEY = {"show_progress", "state", "epochs", "results_dir", "checkpoint_dir", "device", "checkpoint_step"}


def resume_file(config):
    """``<checkpoint_dir>/<model>-<dataset>-<key>.resume.pth``, the key a hash of the run's settings."""
    settings = sorted((k, str(v)) for k, v in config.final_config_dict.items() if k not in _NOT_IN_RESUME_KEY)
    key = hashlib.md5(repr(settings).encode()).hexdigest()[:12]
    return os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{key}.resume.pth")


def save_atomically(state, path):
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)  # a kill mid-write leaves the last good one


class Resumable:
    """Mixin for a RecBole trainer whose ``fit`` is ``Trainer.fit``: ``resumable(SomeTrainer)`` builds the class."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.run_started = time.time()  # quick_start sets the run's own start; resumed sessions add up
        self.valid_curve = []  # (seconds on that clock, epoch, valid score), every session's
        self.time_to_best = float("nan")
        self.resume_file = resume_file(config)

    def _save_resume(self, epoch_idx, train_data):
        save_atomically({
            "epoch": epoch_idx,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "cur_step": self.cur_step,
            "saved_model_file": self.saved_model_file,
            "time_to_best": self.time_to_best,
            "elapsed": time.time() - self.run_started,
            "valid_curve": self.valid_curve,
            "random": (torch.get_rng_state(), np.random.get_state(), random.getstate(),
                       train_data.generator.get_state()),  # the train loader's shuffle
        }, self.resume_file)

    def _resume(self, train_data):
        if not os.path.isfile(self.resume_file):
            return
        state = torch.load(self.resume_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.cur_step, self.saved_model_file = state["cur_step"], state["saved_model_file"]
        self.time_to_best, self.valid_curve = state["time_to_best"], state["valid_curve"]
        self.run_started -= state["elapsed"]  # the clock goes on from where the killed session left it
        torch_state, numpy_state, python_state, loader_state = state["random"]
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        train_data.generator.set_state(loader_state)
        self.start_epoch = state["epoch"] + 1
        self.logger.info(set_color("Resuming", "yellow") + f" from {self.resume_file} after epoch {self.start_epoch}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._resume(train_data)
        if self.start_epoch >= self.epochs or self.cur_step > self.stopping_step:  # killed as it returned
            return self._finish(self.best_valid_score, self.best_valid_result)

        def after_validation(epoch_idx, valid_score):  # RecBole calls it after its stopping rule and best-model save
            self.valid_curve.append((round(time.time() - self.run_started, 2), epoch_idx + 1, valid_score))
            if self.cur_step == 0:  # early_stopping resets the count on an improvement
                self.time_to_best = time.time() - self.run_started
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            self._save_resume(epoch_idx, train_data)

        return self._finish(*super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation))

    def _finish(self, best_valid_score, best_valid_result):
        if os.path.isfile(self.resume_file):
            os.remove(self.resume_file)  # finished: a rerun starts afresh
        return best_valid_score, best_valid_result


def resumable(trainer_class):
    """``trainer_class`` with resume, if its ``fit`` is RecBole's own (the one ``Resumable`` hooks into)."""
    if not issubclass(trainer_class, Trainer) or trainer_class.fit is not Trainer.fit:
        return trainer_class
    return type(trainer_class.__name__, (Resumable, trainer_class), {"__doc__": trainer_class.__doc__})
