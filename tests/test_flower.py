"""engine: flower: the same rounds through Flower's simulation engine as in-process, and what a client sends.

Each Flower run starts a local Ray (about 20 s on two cores): the runs are few and shared between tests.
"""
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lumos import registry
from recbole_lumos.compat import require_ray
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.client import private_prefixes
from recbole_lumos.federated.server import Server
from recbole_lumos.flower.engine import FlowerTrainer
from recbole_lumos.quick_start import build_config
from recbole_lumos.trainer import FederatedTrainer
from tests.conftest import tiny_settings

pytest.importorskip("flwr", reason="engine flower is optional: pip install \"recbole-lumos[flower]\" (flwr 1.42)")
try:  # the simulation runs on Ray: RecBole's pinned 2.6.3 cannot import
    require_ray("engine flower's simulation")
except LumosError as e:
    pytest.skip(str(e), allow_module_level=True)

# the only randomness a client draws itself (dropout, extra negatives) off: a Flower client draws it from
# (seed, round, client), in-process clients from one generator per round. Random views are seeded per user.
DETERMINISTIC_CLIENTS = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "tri_extra_negatives": 0}


def train(trainer_class, data_path, model, **overrides):
    """2 rounds; returns the trainer, the clients sampled in each round and every reply the server received."""
    config = build_config(model, "tiny", config_dict=tiny_settings(data_path, **DETERMINISTIC_CLIENTS, **overrides))
    init_seed(config["seed"], True)
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    trainer = trainer_class(config, registry.get_model(model)(config, train_data._dataset))
    sampled, replies = [], []
    sample, setup = Server.sample_clients, FlowerTrainer.setup

    def setup_with_spy(self, dataset):  # the ServerApp runs in this process: spy on its grid
        send = self.grid.send_and_receive

        def spy(messages, timeout=None):
            received = list(send(messages, timeout=timeout))
            replies.extend(received)
            return received

        self.grid.send_and_receive = spy
        setup(self, dataset)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Server, "sample_clients", lambda self, g: sampled.append(sample(self, g)) or sampled[-1])
        patch.setattr(FlowerTrainer, "setup", setup_with_spy)
        trainer.fit(train_data, valid_data, saved=False)
    return trainer, sampled, replies


def shared_state(trainer):
    return {name: param.detach().clone() for name, param in trainer.shared.items()}


def assert_same_model(in_process, flower, atol):
    assert set(in_process) == set(flower)
    for name in in_process:
        assert torch.allclose(in_process[name], flower[name], atol=atol), (name, (in_process[name] - flower[name]).abs().max())


@pytest.fixture(scope="module")
def lumos_runs(tiny_data, tmp_path_factory, one_thread):
    """LUMOS (private heads, random views, FedAdam, FedAvg) in-process and through Flower."""
    with pytest.MonkeyPatch.context() as patch:  # checkpoints and logs land in a fresh folder
        patch.chdir(tmp_path_factory.mktemp("lumos"))
        return {cls: train(cls, tiny_data, "LUMOS") for cls in (FederatedTrainer, FlowerTrainer)}


def test_lumos_through_flower_equals_in_process(lumos_runs):
    (in_process, sampled, _), (flower, flower_sampled, _) = lumos_runs[FederatedTrainer], lumos_runs[FlowerTrainer]
    assert sampled == flower_sampled and len(sampled) == 2
    # a client trained in both rounds starts round 2 from the head it kept (in Context.state): without it, its
    # round-2 update, and so the model, would differ
    assert set(sampled[0]) & set(sampled[1])
    assert_same_model(shared_state(in_process), shared_state(flower), atol=1e-5)
    assert flower.best_valid_score == pytest.approx(in_process.best_valid_score, abs=1e-4)


def test_a_client_sends_only_shared_parameter_deltas_and_counts(lumos_runs):
    flower, sampled, replies = lumos_runs[FlowerTrainer]
    shared = {name: param.shape for name, param in flower.shared.items()}
    private = private_prefixes(flower.config)
    assert private and flower.model.uses_views  # LUMOS with private heads: there is something to keep back
    train_replies = [r for r in replies if r.metadata.message_type == "train"]
    assert len(train_replies) == sum(map(len, sampled))  # every update of every round was read
    for reply in replies:
        content = reply.content
        if reply.metadata.message_type == "query.client":  # before the first round: which client a SuperNode holds
            assert set(content) == {"config"} and set(content["config"]) == {"client"}
            continue
        assert reply.metadata.message_type == "train"
        assert set(content) == {"arrays", "metrics"}
        assert set(content.array_records) == {"arrays"} and not content.config_records
        assert set(content["arrays"]) == set(shared)  # the shared parameters' deltas, nothing else
        assert not any(name.startswith((*private, "projection.")) for name in content["arrays"])
        assert all(tuple(content["arrays"][name].shape) == tuple(shared[name]) for name in shared)
        assert set(content["metrics"]) == {"num-examples", "rec", "tri"}


@pytest.mark.parametrize("model,aggregator", [("FedSASRec", "fedavg"), ("LUMOS", "dp_fedavg"),
                                              ("FedSASRec", "krum")])
def test_flower_round_equals_in_process(tiny_data, in_tmp, one_thread, model, aggregator):
    """Our Server's sampling (Poisson under DP-FedAvg), aggregator (noise included) and FedAdam step, as in-process."""
    in_process, sampled, _ = train(FederatedTrainer, tiny_data, model, aggregator=aggregator)
    flower, flower_sampled, _ = train(FlowerTrainer, tiny_data, model, aggregator=aggregator)
    assert sampled == flower_sampled
    assert_same_model(shared_state(in_process), shared_state(flower), atol=1e-5)
