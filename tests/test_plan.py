"""The benchmark plans' models: RecBole's strongest sequential models train through the plugin, every model has a
search space over its width, and the paper-protocol plan resolves (no training there)."""
import math

import pytest
import yaml

from recbole_lumos.benchmark import plan_path, read_plan, select_runs
from recbole_lumos.paths import PROPERTIES
from recbole_lumos.quick_start import build_config, run
from tests.conftest import tiny_settings

DEFAULT_PLAN = str(PROPERTIES / "benchmark.yaml")


def plan_row(name, dataset="ml-100k"):
    """(model, settings) of a run of the default plan, as the benchmark gives them on ``dataset``."""
    runs, _ = select_runs(read_plan(DEFAULT_PLAN), only=[name], dataset=dataset)
    return runs[0][1], runs[0][2]


@pytest.mark.parametrize("name", ["FEARec", "CORE", "LightSANs", "SASRecF"])
def test_recboles_strongest_sequential_models_train_an_epoch_through_the_plugin(tiny_data, in_tmp, one_thread, name):
    # the tiny dataset has ml-100k's item columns (movie_title, class): SASRecF reads the ml-100k row's features
    model, settings = plan_row(name)
    layers = 2 if name == "FEARec" else 1  # FEARec's frequency filters need 2 layers or more (RecBole divides by n - 1)
    result = run(model, "tiny", config_dict=tiny_settings(tiny_data, epochs=1, n_layers=layers, **settings))
    metrics = {**result["test_result"], **result["best_valid_result"]}
    assert set(result["test_result"]) == {"hit@10", "hit@20", "ndcg@10", "ndcg@20"}
    assert all(math.isfinite(value) and 0 <= value <= 1 for value in metrics.values()), metrics
    assert result["views"] == {"kind": "none", "key": None}  # RecBole's models read no views


def test_sasrecf_reads_each_datasets_item_text_columns():
    loaded = {}
    for dataset in ("ml-100k", "amazon-office"):
        with open(PROPERTIES / "dataset" / f"{dataset}.yaml") as f:
            loaded[dataset] = set(yaml.safe_load(f)["load_col"]["item"])
    for dataset, features in (("ml-100k", ["class", "movie_title"]), ("amazon-office", ["categories", "title"])):
        model, settings = plan_row("SASRecF", dataset)
        assert model == "SASRecF" and settings["selected_features"] == features
        assert set(features) <= loaded[dataset]  # the dataset's yaml loads them


def size_key(defaults):
    """The key that sets a model's width: hidden_size, or embedding_size where it has none (CORE)."""
    return "hidden_size" if "hidden_size" in defaults else "embedding_size"


def test_every_model_of_the_default_plan_searches_its_width_with_inner_size_four_times_it():
    pytest.importorskip("ray")
    from recbole_lumos.tune import derive, load_search_space

    models = {model for _, model, _ in select_runs(read_plan(DEFAULT_PLAN))[0]}
    assert {"FEARec", "CORE", "LightSANs", "SASRecF", "CL4SRec", "FedCL4SRec"} <= models
    for model in sorted(models):
        space, search, derived = load_search_space(str(PROPERTIES / "search" / f"{model}.yaml"))
        defaults = build_config(model, "ml-100k").final_config_dict
        key = size_key(defaults)
        assert sorted(space[key].categories) == [64, 128], model
        assert search["num_samples"] == 8 and search["defaults_first"] is True, model
        if "inner_size" in defaults:  # the feed-forward width follows, and the defaults keep 4 x
            assert derived == {"inner_size": (key, 4)}, model
            assert derive(derived, {key: 128}) == {"inner_size": 512}
            assert defaults["inner_size"] == 4 * defaults[key], model
        else:
            assert not derived, model


def test_the_paper_protocol_plan_reads_and_every_row_resolves():
    plan = read_plan(plan_path("paper-protocol"))
    runs, seeds = select_runs(plan, dataset="ml-100k")
    assert seeds == [2020, 2021, 2022] and plan["runs_folder"] == "paper-protocol"
    assert {name for name, _, _ in runs} == {"LUMOS-llm", "LUMOS-embedding", "FedSASRec", "FedCL4SRec"}
    for name, model, settings in runs:
        config = build_config(model, "ml-100k", config_dict=settings)
        protocol = {"client_fraction": 1.0, "local_epochs": 5, "local_learner": "adam", "local_learning_rate": 0.01,
                    "hidden_size": 8, "inner_size": 32, "epochs": 20, "eval_step": 1, "learner": "sgd",
                    "learning_rate": 1.0, "federated": True}
        assert {key: config[key] for key in protocol} == protocol, name


def test_the_fedavg_and_renamed_rows_are_what_their_names_say():
    for name, views in (("FedSASRec-fedavg", None), ("LUMOS-llm-fedavg", "llm")):
        model, settings = plan_row(name)
        assert settings["learner"] == "sgd" and settings["learning_rate"] == 1.0 and settings.get("views") == views
    # LUMOS with random views: the rows once published as FedCL4SRec and CL4SRec
    assert plan_row("LUMOS-random") == ("LUMOS", {"view_seed": 2020, "views": "random"})
    model, settings = plan_row("LUMOS-random-central")
    assert model == "LUMOS" and settings == {"view_seed": 2020, "views": "random", "federated": False,
                                             "eval_step": 1, "learning_rate": 0.001}
    assert plan_row("CL4SRec")[0] == "CL4SRec" and plan_row("FedCL4SRec")[0] == "FedCL4SRec"


def test_dp_runs_keep_the_last_rounds_model_so_selection_reads_no_validation_item():
    """The reported epsilon counts training only: a DP run that chose its best round on the clients' validation
    items would spend privacy it does not report. The robustness plan's DP rows validate once, after the last round."""
    runs, _ = select_runs(read_plan(plan_path("robustness")), dataset="ml-100k")
    dp = [(name, model, settings) for name, model, settings in runs if settings.get("aggregator") == "dp_fedavg"]
    assert len(dp) == 6
    for name, model, settings in dp:
        config = build_config(model, "ml-100k", config_dict=settings)
        assert config["eval_step"] == config["epochs"] == 300, name
        assert config["checkpoint_step"] == 20, name  # a killed run still resumes from a recent round
