"""federate(): a RecBole sequential model trained by the plugin's federated side, each client on the model's own
loss. GRU4Rec here: its nn.GRU has no vmap rule, so its per-client updates come from the plain loop."""
import copy
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import recbole.data.dataset
import torch
import yaml
from recbole.data.interaction import Interaction
from recbole.model.general_recommender import BPR
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, NARM

from recbole_lumos import registry
from recbole_lumos.data.partition import partition_clients
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import FedAvg
from recbole_lumos.federated.client import CohortTrainer
from recbole_lumos.federated.client_data import ClientData, windows_of
from recbole_lumos.registry import federate
from recbole_lumos.trainer import FederatedTrainer
from tests.conftest import tiny_settings
from tests.test_federated import setup_model as federated_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FedGRU4Rec = federate(GRU4Rec)
PATHS = {"summed": {}, "one delta per client": {"local_epochs": 2}}  # the summed path vs the per-client loop


def setup_model(data_path, model="FedGRU4Rec", **overrides):
    return federated_setup(data_path, model=model, **overrides)


def own_rows_loss(model, histories, users):
    """GRU4Rec's own calculate_loss on these users' rows, listed one by one: in each window of a history, every
    target after the items before it (right-padded)."""
    L = model.max_seq_length
    rows = [(list(window[:t]) + [0] * (L - t), t, window[t])
            for user in users for window in windows_of(histories[user], L) for t in range(1, len(window))]
    seqs, lengths, targets = (torch.tensor(np.array(column)) for column in zip(*rows))
    return model.calculate_loss(Interaction({model.ITEM_SEQ: seqs, model.ITEM_SEQ_LEN: lengths,
                                             model.POS_ITEM_ID: targets}))


def test_federate_registers_a_federated_subclass_with_no_private_parameter(tiny_data, in_tmp):
    config, _, _, _, model, trainer = setup_model(tiny_data)
    assert FedGRU4Rec.__name__ == "FedGRU4Rec" and issubclass(FedGRU4Rec, GRU4Rec)
    assert federate(GRU4Rec) is FedGRU4Rec  # the same class again: a second import registers nothing new
    assert isinstance(trainer, FederatedTrainer) and not model.uses_views and model.tri_weight == 0
    assert set(trainer.shared) == {n for n, _ in model.named_parameters()}  # every parameter goes to the server
    # GRU4Rec's own defaults over FedSASRec's federation settings (tiny_settings sets hidden_size 16)
    assert config["embedding_size"] == 64 and config["num_layers"] == 1 and config["hidden_size"] == 16
    assert config["federated"] and config["aggregator"] == "fedavg" and config["loss_type"] == "CE"


@pytest.mark.parametrize("path", PATHS)
def test_two_rounds_move_the_shared_parameters_and_evaluate_finite(tiny_data, in_tmp, path):
    config, train, valid, test, model, trainer = setup_model(tiny_data, client_fraction=1.0, **PATHS[path])
    assert trainer.config["epochs"] == 2 and trainer.eval_step == 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after_round = []
    trainer.fit(train, valid, saved=False, callback_fn=lambda round_idx, score: after_round.append(
        {n: p.detach().clone() for n, p in model.named_parameters()}))
    assert len(after_round) == 2
    for name, start in before.items():  # every parameter moved in round 1, and again in round 2
        assert not torch.equal(after_round[0][name], start), name
        assert not torch.equal(after_round[1][name], after_round[0][name]), name
    result = trainer.evaluate(test, load_best_model=False)
    assert {"hit@10", "ndcg@20"} <= set(result) and all(math.isfinite(v) for v in result.values())


def test_each_client_update_is_the_model_s_own_loss_on_its_own_rows(tiny_data, in_tmp):
    """The loss a client trains is GRU4Rec's calculate_loss on exactly its own rows; its update (the per-client
    loop, 2 local steps) is that of a copy of the model trained on them alone; the summed path hands the server
    the FedAvg mean of the one-step updates."""
    config, train, _, _, model, _ = setup_model(tiny_data, dropout_prob=0.0)
    histories = train._dataset.client_histories()
    clients = partition_clients(np.array(sorted(histories)), num_clients=5, seed=0)
    data = ClientData(histories, clients, None, config["MAX_ITEM_LIST_LENGTH"])
    for client, users in enumerate(clients):
        got = model.client_loss(data.batch_of_users([client]))[0]
        assert torch.allclose(got, own_rows_loss(model, histories, users), atol=1e-6), client

    cohort, lr = list(range(5)), 0.5
    shared = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = data.cohort(cohort)  # clients padded to the same window count: padding windows hold no row
    update, _, _ = CohortTrainer(model, 2, "sgd", lr).local_update(shared, {}, batch, data.num_samples[cohort])
    for row, client in enumerate(cohort):
        local = copy.deepcopy(model)
        optimizer = torch.optim.SGD(local.parameters(), lr=lr)
        for _ in range(2):
            optimizer.zero_grad()
            own_rows_loss(local, histories, clients[client]).backward()
            optimizer.step()
        for name, p in local.named_parameters():
            assert torch.allclose(update.deltas[name][row], p.detach() - shared[name], atol=1e-5), (name, client)

    one_step = CohortTrainer(model, 1, "sgd", lr)
    weights = data.num_samples[cohort]
    each, _, _ = one_step.local_update(shared, {}, batch, weights)
    summed, _, _ = one_step.summed_update({}, data.batch_of_users(cohort), weights)
    fedavg = FedAvg()
    fedavg.start()
    fedavg.add(each.deltas, each.num_samples)
    for name, mean in fedavg.result().items():
        assert torch.allclose(summed.deltas[name][0], mean, atol=1e-6), name


def test_misuse_is_a_one_line_error(tiny_data, in_tmp):
    with pytest.raises(LumosError, match="loss_type CE only, got BPR") as bpr:
        setup_model(tiny_data, loss_type="BPR")
    with pytest.raises(LumosError, match="SequentialRecommender subclass") as general:
        federate(BPR)
    with pytest.raises(LumosError, match="'LUMOS' is registered already") as taken:
        federate(NARM, name="LUMOS")
    *_, bert, _ = setup_model(tiny_data, model=federate(BERT4Rec).__name__)
    with pytest.raises(LumosError, match="BERT4Rec.calculate_loss reads 'Mask_item_id_list'") as masked:
        bert.client_loss({"windows": torch.tensor([[1, 2, 3, 0]])})  # a loss on more than the rows
    assert all("\n" not in str(e.value) for e in (bpr, general, taken, masked))
    assert registry.get_model("LUMOS").__name__ == "LUMOS"  # the refused name still means the plugin's model


def test_the_plugin_models_resolve_and_an_unknown_name_lists_them():
    for name in ("LUMOS", "FedSASRec", "FedCL4SRec", "FedGRU4Rec"):
        assert registry.get_model(name).__name__ == name
        assert registry.get_trainer(None, name) is FederatedTrainer
        assert hasattr(recbole.data.dataset, f"{name}Dataset")
    assert registry.get_model("GRU4Rec") is GRU4Rec  # RecBole's own model, by its own trainer
    for name in ("GRU4Rec", "CL4SRec"):  # CL4SRec: the plugin's, a plain RecBole model (model/cl4srec.py)
        assert registry.get_trainer(registry.get_model(name).type, name) is not FederatedTrainer
    assert registry.get_model("CL4SRec").__name__ == "CL4SRec" and "CL4SRec" not in registry.plugin_models()
    assert {"LUMOS", "FedSASRec", "FedCL4SRec", "FedGRU4Rec"} <= set(registry.plugin_models())
    with pytest.raises(LumosError) as unknown:
        registry.get_model("NoSuchRec")
    message = str(unknown.value)
    assert "\n" not in message and "Unknown model 'NoSuchRec'" in message
    assert all(name in message for name in ("LUMOS", "FedSASRec", "FedCL4SRec", "CL4SRec", "FedGRU4Rec", "GRU4Rec"))


def test_register_model_is_a_decorator_for_a_model_with_the_client_interface():
    from recbole_lumos.model.lumos import LUMOS

    @registry.register_model
    class MyLUMOS(LUMOS):
        pass

    assert registry.get_model("MyLUMOS") is MyLUMOS and registry.get_trainer(None, "MyLUMOS") is FederatedTrainer


def test_lumos_modules_names_the_user_module_to_import(tmp_path, monkeypatch):
    (tmp_path / "my_fed_models.py").write_text("from recbole.model.sequential_recommender import NARM\n"
                                               "from recbole_lumos.registry import federate\n"
                                               "federate(NARM, name='FedNARMFromEnv')\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the registry adds the run's folder: undone afterwards
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(registry.USER_MODULES, "my_fed_models")
    assert registry.get_model("FedNARMFromEnv").federated_from is NARM
    monkeypatch.setenv(registry.USER_MODULES, "my_fed_models, no_such_module_xyz")
    with pytest.raises(LumosError, match="LUMOS_MODULES names 'no_such_module_xyz'") as missing:
        registry.get_model("FedNARMFromEnv2")
    assert "\n" not in str(missing.value)


def test_the_cli_runs_a_federated_model_and_a_fresh_process_loads_its_checkpoint(tiny_data, tmp_path):
    """The documented way: a module that calls federate, named by LUMOS_MODULES, then the CLI by the model's name;
    the checkpoint (whose config holds the class) loads in another process through the same variable."""
    (tmp_path / "my_models.py").write_text("from recbole.model.sequential_recommender import GRU4Rec\n"
                                           "from recbole_lumos.registry import federate\n"
                                           "federate(GRU4Rec)\n")
    with open(tmp_path / "tiny.yaml", "w") as f:
        yaml.safe_dump(tiny_settings(tiny_data, epochs=1), f)
    env = {**os.environ, registry.USER_MODULES: "my_models", "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    cli = subprocess.run([sys.executable, "-m", "recbole_lumos", "-m", "FedGRU4Rec", "-d", "tiny",
                          "--config_files", "tiny.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0 and "FedGRU4Rec on tiny" in cli.stdout, cli.stderr[-2000:]
    checkpoint, = (tmp_path / "saved").glob("FedGRU4Rec-*.pth")
    load = ("from recbole.quick_start import load_data_and_model; import recbole_lumos; "
            f"config, model, *_ = load_data_and_model({str(checkpoint)!r}); "
            "print(type(model).__name__, type(model).federated_from.__name__, config['model'])")
    loaded = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.stdout.split()[-3:] == ["FedGRU4Rec", "GRU4Rec", "FedGRU4Rec"], loaded.stderr[-2000:]
