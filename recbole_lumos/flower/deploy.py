"""The ServerApp and ClientApp for a deployment: a SuperLink, one SuperNode per client, ``flwr run`` (docs/flower.md).

The run config (``[tool.flwr.app.config]`` of the Flower App's pyproject.toml, or ``flwr run --run-config``):
  ``model``, ``dataset``, ``config-files`` (yaml paths as on every machine, comma-separated; may be empty).
Each SuperNode's node config (``flower-supernode --node-config``):
  ``partition-id``, the client it holds (0 .. clients - 1); ``data-path`` (optional), where that machine keeps the
  dataset folders.
The server builds the run as ``run_lumos.py`` does and keeps the validation and test data (RecBole's evaluator runs
there); every SuperNode builds the same client side and trains only its own client.
"""
import logging
from logging import getLogger

from flwr.serverapp import ServerApp
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed

from recbole_lumos import registry
from recbole_lumos.flower.client_app import LocalClient
from recbole_lumos.flower.client_app import client_app as make_client_app
from recbole_lumos.flower.engine import FlowerTrainer, check_supported
from recbole_lumos.quick_start import build_config, format_metrics


def prepare(run_config, data_path=None):
    """config, (train, valid, test) data and the initial model of the run, as ``quick_start.run`` builds them."""
    files = [path.strip() for path in str(run_config.get("config-files", "")).split(",") if path.strip()]
    config = build_config(run_config["model"], run_config["dataset"], files,
                          {"data_path": data_path} if data_path else {})
    check_supported(config)
    init_seed(config["seed"], config["reproducibility"])
    data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, data[0]._dataset).to(config["device"])
    return config, data, model


server_app = ServerApp()


@server_app.main()
def main(grid, context):
    config, (train_data, valid_data, test_data), model = prepare(context.run_config)
    init_logger(config)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Grid's every HTTP request, at INFO
    trainer = FlowerTrainer(config, model)
    trainer.fit_on_grid(grid, train_data, valid_data, show_progress=config["show_progress"])
    result = trainer.evaluate(test_data, load_best_model=True)
    getLogger().info(f"test result: {format_metrics(result)} (best model: {trainer.saved_model_file})")


_local = {}  # this SuperNode's client side, built at its first message


def load(context):
    if "client" not in _local:
        config, (train_data, _, _), model = prepare(context.run_config, context.node_config.get("data-path"))
        _local["client"] = LocalClient(config, model, train_data._dataset)
    return _local["client"]


client_app = make_client_app(load)
