"""--tune: a 2-trial Ray Tune search on tiny data, its table, and a best config that runs."""
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import run_lumos
from recbole_lumos.benchmark import read_plan, select_runs
from recbole_lumos.errors import LumosError
from recbole_lumos.paths import PROPERTIES
from recbole_lumos.quick_start import build_config
from recbole_lumos.tune import default_point, load_search_space
from tests.conftest import tiny_settings

pytest.importorskip("ray")


def test_a_two_trial_search_writes_its_table_and_a_usable_best_config(tiny_data, in_tmp, capsys):
    (in_tmp / "space.yaml").write_text(
        "space:\n  learning_rate: {choice: [0.001, 0.01]}\n  tri_weight: {uniform: [0.05, 0.5]}\n"
        "  hidden_size: {choice: [8, 16]}\nderived:\n  inner_size: {times: [hidden_size, 4]}\n"
        "tune:\n  num_samples: 5\n  grace_period: 1\n")
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data)))
    code = run_lumos.main(["--tune", "--model=LUMOS", "--dataset=tiny", "--search_space=space.yaml",
                           "--config_files=tiny.yaml", "--num_samples=2", "--output_dir=tune", "--epochs=3",
                           "--max_concurrent_trials=1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    reports = [[json.loads(line) for line in path.read_text().splitlines()]
               for path in sorted((in_tmp / "tune" / "ray").glob("*/*/result.json"))]
    assert len(reports) == 2 and all(reports)
    first, second = sorted(reports, key=lambda trial: trial[0]["timestamp"])
    # one trial at a time: the second started (its first report less that report's time) after the first's last
    # report; Ray's timestamps are whole seconds, hence the 1 s
    assert first[-1]["timestamp"] <= second[0]["timestamp"] - second[0]["time_this_iter_s"] + 1
    with open(in_tmp / "tune" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 2  # --num_samples beat the file's 5
    assert float(trials[0]["valid_ndcg@20"]) >= float(trials[1]["valid_ndcg@20"])
    defaults = build_config("LUMOS", "tiny", [str(in_tmp / "tiny.yaml")], {"data_path": str(tiny_data)})
    point = (float(defaults["learning_rate"]), float(defaults["tri_weight"]))
    points = [(float(t["learning_rate"]), float(t["tri_weight"])) for t in trials]
    assert point in points  # one trial ran the defaults (they may lie outside the space) ...
    points.remove(point)  # ... the other was drawn from the space
    assert all(lr in (0.001, 0.01) and 0.05 <= weight <= 0.5 for lr, weight in points)
    assert "ran the model's defaults" in (in_tmp / "tune" / "trials.md").read_text()
    best = yaml.safe_load((in_tmp / "tune" / "best.yaml").read_text())
    assert best["epochs"] == 3 and best["learning_rate"] == float(trials[0]["learning_rate"])
    assert "data_path" not in best
    # inner_size follows hidden_size in every trial that ran to its end (ASHA may stop one), and in the best config
    results = (in_tmp / "tune" / "ray").glob("*/*/results/tiny/*.json")
    configs = [json.loads(path.read_text())["config"] for path in results]
    assert configs and all(config["inner_size"] == 4 * config["hidden_size"] for config in configs)
    assert best["inner_size"] == 4 * best["hidden_size"] and best["hidden_size"] in (8, 16)
    assert "inner_size = 4 x hidden_size" in (in_tmp / "tune" / "trials.md").read_text()
    code = run_lumos.main(["--model=LUMOS", "--dataset=tiny", f"--data_path={tiny_data}",
                           "--config_files=tiny.yaml tune/best.yaml"])
    assert code == 0, capsys.readouterr().err


def test_a_search_killed_mid_trial_resumes_that_trial_when_restored(tiny_data, in_tmp, capsys):
    """A search that outlives a session is killed and restored (--restore): its unfinished trial goes on from its
    last validation, with ASHA's count of validations going on too, instead of starting over."""
    (in_tmp / "space.yaml").write_text("space:\n  learning_rate: {choice: [0.001]}\ntune:\n  num_samples: 1\n")
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data, stopping_step=1000)))
    command = ["--tune", "--model=SASRec", "--dataset=tiny", "--search_space=space.yaml", "--config_files=tiny.yaml",
               "--output_dir=tune"]
    run_file = Path(__file__).resolve().parents[1] / "run_lumos.py"
    search = subprocess.Popen([sys.executable, str(run_file), *command, "--epochs=1000"], cwd=in_tmp,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, checkpointed = time.time() + 300, None
        while checkpointed is None or torch.load(checkpointed, weights_only=False)["epoch"] < 1:
            assert search.poll() is None and time.time() < deadline, "the search ended before its second validation"
            time.sleep(0.2)
            checkpointed = next(iter(glob.glob("tune/ray/*/*/saved/*.resume.pth")), None)
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # Ray's own processes too: they are in the search's session
        search.wait()
    killed_after = torch.load(checkpointed, weights_only=False)["epoch"]  # the last epoch checkpointed
    results = Path(checkpointed).parents[1] / "result.json"
    before = set(results.read_text().splitlines()) if results.exists() else set()

    # a shorter budget, so the test ends soon (the budget is not part of a run's resume key)
    code = run_lumos.main([*command, f"--epochs={killed_after + 4}",
                           f"--restore={glob.glob('tune/ray/*')[0]}"])
    assert code == 0, capsys.readouterr().err
    after = [json.loads(line) for line in results.read_text().splitlines() if line not in before]
    assert [r["validation"] for r in after if not r.get("final")] == [killed_after + 2, killed_after + 3,
                                                                       killed_after + 4]
    assert "test_ndcg@20" in after[-1]  # finished, its best model (saved before the kill) evaluated
    with open(in_tmp / "tune" / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert "ran the model's defaults" in (in_tmp / "tune" / "trials.md").read_text()  # said after a restore too


def test_the_defaults_trial_holds_every_searched_key_but_grid_ones(tmp_path):
    (tmp_path / "space.yaml").write_text("space:\n  learning_rate: {loguniform: [0.0001, 0.1]}\n"
                                         "  n_layers: {grid: [1, 2]}\n  tri_weight: {choice: [0.3, 0.7]}\n")
    space, _, _ = load_search_space(str(tmp_path / "space.yaml"))
    config = {"learning_rate": 0.002, "n_layers": 2, "tri_weight": 0.1}
    assert default_point(space, config) == {"learning_rate": 0.002, "tri_weight": 0.1}  # outside the choice: kept


@pytest.mark.parametrize("text,message", [
    ("space:\n  learning_rate: {normal: [0, 1]}\n", "must be one of"),
    ("space:\n  learning_rate: {uniform: [0.1]}\n", "needs a list"),
    ("space: {}\ntune:\n  trials: 3\n", "unknown tune setting"),
    ("space:\n  hidden_size: {choice: [64]}\nderived:\n  inner_size: {times: [embedding_size, 4]}\n",
     "derived 'inner_size' must be"),  # from a key the space does not search
    ("space:\n  hidden_size: {choice: [64]}\nderived:\n  inner_size: {plus: [hidden_size, 4]}\n", "times"),
    ("space:\n  hidden_size: {choice: [64]}\nderived:\n  inner_size: {times: [hidden_size]}\n", "times"),
])
def test_a_malformed_search_space_is_refused_in_one_line(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(LumosError, match=message):
        load_search_space(str(tmp_path / "space.yaml"))


def test_an_unknown_model_is_named_before_its_search_space_is_looked_for(capsys):
    assert run_lumos.main(["--tune", "--model=NoSuchRec"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Unknown model 'NoSuchRec'" in err


def test_every_model_of_the_head_to_head_has_a_search_space_with_the_same_trial_budget():
    """Fair baselines (issue 10): each benchmark model is tuned with its own space and the same number of trials,
    over keys the model actually has, starting from its defaults; every federated model searches the same
    clients per round (the knob the first tuned head-to-head gave FedSASRec alone)."""
    models = {model for _, model, _ in select_runs(read_plan(str(PROPERTIES / "benchmark.yaml")))[0]}
    budgets, client_fractions = {}, {}
    for model in models:
        space, settings, _ = load_search_space(str(PROPERTIES / "search" / f"{model}.yaml"))
        budgets[model] = settings["num_samples"]
        assert settings["defaults_first"] is True, model
        defaults = build_config(model, "ml-100k").final_config_dict
        assert space and set(space) <= set(defaults), model
        if defaults.get("federated"):
            domain = space.get("client_fraction")
            client_fractions[model] = tuple(domain.categories) if domain is not None else None
    assert len(set(budgets.values())) == 1, budgets
    assert len(client_fractions) >= 3 and len(set(client_fractions.values())) == 1, client_fractions
    assert None not in client_fractions.values(), client_fractions


def test_write_outputs_plots_each_trial_in_the_order_started_with_the_running_maximum(tmp_path):
    """search.png: the trials in the order Ray started them (its trial numbers, not the table's score order), each
    one's best validation NDCG@20, and the best so far, which is their running maximum."""
    import pandas as pd

    from recbole_lumos.tune import METRIC, VALIDATION, search_series, write_outputs

    frame = pd.DataFrame({"trial_id": ["ab_00002", "ab_00000", "ab_00003", "ab_00001"],
                          "config/learning_rate": [0.002, 0.001, 0.004, 0.003],
                          METRIC: [0.05, 0.03, 0.02, 0.04], VALIDATION: [4, 3, 1, 2]})

    class Result:
        def __init__(self, trial_id):
            self.metrics, self.error, self.config = {"trial_id": trial_id}, None, {}

    class Grid:
        def get_dataframe(self, filter_metric, filter_mode):
            return frame

        def __iter__(self):
            return iter([Result(trial_id) for trial_id in frame["trial_id"]])

    write_outputs(Grid(), {"learning_rate": None}, {}, str(tmp_path), "SASRec", "tiny")
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[search.png](search.png)" in (tmp_path / "trials.md").read_text()
    ids, scores, best = search_series(pd.read_csv(tmp_path / "trials.csv"))
    assert ids == ["ab_00000", "ab_00001", "ab_00002", "ab_00003"]
    assert scores == [0.03, 0.04, 0.05, 0.02]
    assert best == [0.03, 0.04, 0.05, 0.05] == [max(scores[:n + 1]) for n in range(len(scores))]
