"""--benchmark: every (run, seed) in its own process, a table of mean ± std, error rows, resume."""
import collections
import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import ttest_rel, wilcoxon

import run_lumos
from recbole_lumos.errors import LumosError
from recbole_lumos.quick_start import cpu_class
from tests.conftest import tiny_settings

PLAN = """
seeds: [1, 2]
runs:
  SASRec: {model: SASRec, epochs: 1}
  FedSASRec: {model: FedSASRec}
  Broken: {model: LUMOS, views: telepathy}
"""


def test_benchmark_writes_table_csv_plot_records_errors_and_resumes(tiny_data, in_tmp, capsys):
    (in_tmp / "plan.yaml").write_text(PLAN)
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data, state="INFO")))
    args = ["--benchmark", "--dataset=tiny", "--benchmark_file=plan.yaml", "--config_files=tiny.yaml", "--workers=2",
            "--runs_dir=runs", "--output_dir=out"]
    assert run_lumos.main(args) == 0
    first = capsys.readouterr().out
    assert "6 to do (0 already finished)" in first

    with open(in_tmp / "out" / "tiny-runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["seed"], r["status"]) for r in rows] == [
        ("SASRec", "1", "ok"), ("SASRec", "2", "ok"), ("FedSASRec", "1", "ok"), ("FedSASRec", "2", "ok"),
        ("Broken", "1", "failed"), ("Broken", "2", "failed")]
    assert all("views must be one of llm, embedding, random, got 'telepathy'" in r["error"] for r in rows[4:])
    assert {r["seed"] for r in rows[:4]} == {"1", "2"} and float(rows[0]["wall_time_s"]) > 0
    assert all(f"CPUs: {cpu_class()}" in r["versions"] for r in rows[:4])  # a figure names its CPU class

    table = (in_tmp / "out" / "tiny.md").read_text()
    fed = [float(r["ndcg@20"]) for r in rows[2:4]]
    expected = f"{np.mean(fed):.4f} ± {np.std(fed, ddof=1):.4f}" if fed[0] != fed[1] else f"{fed[0]:.4f}"
    assert "| FedSASRec | FedSASRec | 2/2 |" in table and expected in table.split("| FedSASRec |")[1].splitlines()[0]
    header, _, *table_rows = [line for line in table.splitlines() if line.startswith("| ")][:5]
    assert all(row.count(" | ") == header.count(" | ") for row in table_rows)  # no ER@K columns without an attack
    assert "ER@20" not in header
    assert "| Broken | LUMOS | 0/2 | failed: exit 2: error: views must be one of llm" in table
    assert "python run_lumos.py --benchmark --dataset=tiny" in table and "RecBole 1.2.1" in table
    assert (in_tmp / "out" / "tiny.png").stat().st_size > 10_000
    with open(in_tmp / "out" / "tiny-curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert {(c["run"], c["epoch"]) for c in curves} >= {("FedSASRec", "1"), ("FedSASRec", "2"), ("SASRec", "1")}

    # A hand-written note survives; finished runs are kept, failed ones are retried
    (in_tmp / "out" / "tiny.md").write_text(table.replace("(none yet)", "LUMOS needs more rounds here."))
    finished = os.path.getmtime(in_tmp / "runs" / "SASRec" / "seed1" / "config.yaml")
    assert run_lumos.main(args) == 0
    assert "2 to do (4 already finished)" in capsys.readouterr().out
    assert os.path.getmtime(in_tmp / "runs" / "SASRec" / "seed1" / "config.yaml") == finished
    assert "LUMOS needs more rounds here." in (in_tmp / "out" / "tiny.md").read_text()


def test_benchmark_refuses_an_unknown_run(tiny_data, in_tmp, capsys):
    (in_tmp / "plan.yaml").write_text(PLAN)
    assert run_lumos.main(["--benchmark", "--benchmark_file=plan.yaml", "--runs=NoSuchRun"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Unknown benchmark run(s) NoSuchRun" in err and "SASRec" in err


SECTIONED_PLAN = """
title: "Study on {dataset}"
runs_folder: study
seeds: [1]
reference: FedSASRec
sections:
  "Plain": [FedSASRec]
  "With views and DP": [LUMOS, LUMOS-dp]
runs:
  FedSASRec: {model: FedSASRec}
  LUMOS: {model: LUMOS, views: random}
  LUMOS-dp: {model: LUMOS, views: random, aggregator: dp_fedavg, dp_epsilon: 4}
"""


def test_a_plan_with_sections_gets_one_table_each_with_the_columns_its_runs_measured(tiny_data, in_tmp, capsys):
    (in_tmp / "plan.yaml").write_text(SECTIONED_PLAN)
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data)))
    (in_tmp / "tuned" / "FedSASRec-tiny").mkdir(parents=True)  # as --tune writes it
    (in_tmp / "tuned" / "FedSASRec-tiny" / "best.yaml").write_text(
        "# Best of 2 trials of FedSASRec on tiny: valid_ndcg@20 0.1000\nlocal_learning_rate: 0.05\n")
    (in_tmp / "tuned" / "LUMOS-tiny").mkdir(parents=True)
    (in_tmp / "tuned" / "LUMOS-tiny" / "best.yaml").write_text(
        "# Best of 2 trials of LUMOS on tiny: valid_ndcg@20 0.1000\ntri_weight: 0.2\n")
    args = ["--benchmark", "--dataset=tiny", "--benchmark_file=plan.yaml", "--config_files=tiny.yaml", "--workers=2",
            "--output_dir=out", "--tuned_dir=tuned"]  # runs go to results/<the plan's runs_folder>/tiny
    assert run_lumos.main(args) == 0
    # each model runs with its own search's best settings; the table says which
    with open(in_tmp / "results" / "study" / "tiny" / "FedSASRec" / "seed1" / "config.yaml") as f:
        assert yaml.safe_load(f)["local_learning_rate"] == 0.05
    with open(in_tmp / "results" / "study" / "tiny" / "LUMOS" / "seed1" / "config.yaml") as f:
        settings = yaml.safe_load(f)
        assert settings["tri_weight"] == 0.2 and "local_learning_rate" not in settings
    text = (in_tmp / "out" / "tiny.md").read_text()
    assert text.startswith("# Study on tiny\n")
    plain, views = text.split("### Plain")[1].split("### With views and DP")
    assert "| FedSASRec |" in plain and "Head drift" not in plain and "DP epsilon" not in plain
    header = next(line for line in views.splitlines() if line.startswith("| Run "))
    assert "Head drift" in header and "L_tri (trained head)" in header and "DP epsilon" in header
    dp_row = next(line for line in views.splitlines() if line.startswith("| LUMOS-dp |"))
    epsilon = float(dp_row.split(" | ")[header.split(" | ").index("DP epsilon")])
    assert 3.98 <= epsilon <= 4.0  # the whole round budget ran (no early stop in 2 rounds): the target is spent

    # Every run wrote its test users' own values (their mean is its reported metric); the reference column is the
    # paired Wilcoxon test over them
    def per_user(run):
        [result] = glob.glob(str(in_tmp / "results" / "study" / "tiny" / run / "seed1" / "*" / "*.json"))
        with open(result) as f:
            reported = json.load(f)["test_result"]
        values = np.load(result.replace(".json", ".per_user.npz"))
        assert np.isclose(values["ndcg@20"].mean(), reported["ndcg@20"], atol=1e-4)
        assert np.isclose(values["hit@20"].mean(), reported["hit@20"], atol=1e-4)
        return values

    reference, lumos = per_user("FedSASRec"), per_user("LUMOS")
    assert len(reference["ndcg@20"]) == len(lumos["ndcg@20"]) > 10  # one value per test user
    header = next(line for line in views.splitlines() if line.startswith("| Run ")).split(" | ")
    assert "FedSASRec vs run, NDCG@20" in header and "FedSASRec vs run, HR@20" in header
    row = next(line for line in views.splitlines() if line.startswith("| LUMOS |")).split(" | ")
    expected_p = wilcoxon(reference["ndcg@20"], lumos["ndcg@20"]).pvalue
    relative = (reference["ndcg@20"].mean() - lumos["ndcg@20"].mean()) / lumos["ndcg@20"].mean()
    assert row[header.index("FedSASRec vs run, NDCG@20")] == f"{relative:+.1%} (p {expected_p:.2g} users; 1 seed)"
    assert row[header.index("Epochs or rounds run / budget")] == "2 / 2"  # which budget each row had
    assert row[header.index("Settings")].startswith("Best of 2 trials of LUMOS on tiny")
    plain_header = next(line for line in plain.splitlines() if line.startswith("| Run ")).split(" | ")
    fed_row = next(line for line in plain.splitlines() if line.startswith("| FedSASRec |")).split(" | ")
    assert fed_row[plain_header.index("Settings")].startswith("Best of 2 trials of FedSASRec on tiny")

    # The runs folder is lost (a fresh clone): the committed record rebuilds the same tables, tests included
    shutil.rmtree(in_tmp / "results")
    assert run_lumos.main(args + ["--report_only=True"]) == 0
    rebuilt = (in_tmp / "out" / "tiny.md").read_text()
    assert rebuilt.split("- Reproduce:")[0] == text.split("- Reproduce:")[0]
    assert "- Record: 3 of the 3 finished (run, seed) pairs were read from this folder's committed files" in rebuilt
    assert "- Record:" not in text
    with open(in_tmp / "out" / "tiny-curves.csv") as f:
        assert {(c["run"], c["epoch"]) for c in csv.DictReader(f)} >= {("LUMOS", "1"), ("LUMOS", "2")}

    # A run whose settings changed reruns; a narrowed invocation (--runs) still reports, and records, the whole plan
    (in_tmp / "plan.yaml").write_text(SECTIONED_PLAN.replace("dp_epsilon: 4", "dp_epsilon: 8"))
    capsys.readouterr()
    assert run_lumos.main(args + ["--runs=LUMOS-dp"]) == 0
    assert "1 to do (0 already finished)" in capsys.readouterr().out
    assert sorted(os.listdir(in_tmp / "results" / "study" / "tiny")) == ["LUMOS-dp"]
    with open(in_tmp / "out" / "tiny-runs.csv") as f:
        recorded = {r["run"]: r for r in csv.DictReader(f)}
    assert (sorted(recorded) == ["FedSASRec", "LUMOS", "LUMOS-dp"]
            and 7.9 <= float(recorded["LUMOS-dp"]["epsilon"]) <= 8.0)
    assert all(r["settings_digest"].startswith("sha1:") for r in recorded.values())
    assert "--runs=" not in (in_tmp / "out" / "tiny.md").read_text()  # its command reproduces the whole report
    # Running the plan there does not rerun what the record holds with the same settings
    shutil.rmtree(in_tmp / "results")
    assert run_lumos.main(args) == 0
    assert "0 to do (3 already finished, 3 of them in the record in out)" in capsys.readouterr().out
    assert not (in_tmp / "results").exists()


def test_a_tuned_reference_is_tested_only_against_tuned_runs_of_the_same_seeds():
    from recbole_lumos.benchmark import UNTUNED, reference_comparisons

    rng = np.random.default_rng(0)
    values = {(run, seed): {"ndcg@20": rng.random(50), "hit@20": rng.random(50)}
              for run in ("A", "B", "C") for seed in (1, 2)}
    tuning = {("A", 1): "search", ("A", 2): "search", ("B", 1): "search", ("B", 2): UNTUNED,
              ("C", 1): UNTUNED, ("C", 2): ""}
    rows = [{"run": run, "seed": seed, "tuning": t} for (run, seed), t in tuning.items()]
    cells = reference_comparisons("A", [("A", "M", {}), ("B", "M", {}), ("C", "M", {})], values, rows)
    a, b = values["A", 1]["ndcg@20"], values["B", 1]["ndcg@20"]  # B's seed 2 ran untuned: left out of the pairing
    expected = f"{(a.mean() - b.mean()) / b.mean():+.1%} (p {wilcoxon(a, b).pvalue:.2g} users; 1 seed)"
    assert cells["B"][0] == expected
    assert cells["C"] == ["n/a (tuned against untuned)"] * 2 and cells["A"] == ["", ""]


def test_two_seeds_are_tested_over_users_and_over_the_seeds_means():
    from recbole_lumos.benchmark import comparison_cell
    from recbole_lumos.significance import seed_comparison

    rng = np.random.default_rng(1)
    mine = [rng.random(40) + 0.1, rng.random(40) + 0.05]
    theirs = [rng.random(40), rng.random(40) + 0.02]
    pooled_a, pooled_b = np.concatenate(mine), np.concatenate(theirs)
    p_seeds = ttest_rel([m.mean() for m in mine], [t.mean() for t in theirs]).pvalue
    relative = (pooled_a.mean() - pooled_b.mean()) / pooled_b.mean()
    assert comparison_cell(mine, theirs) == (f"{relative:+.1%} (p {wilcoxon(pooled_a, pooled_b).pvalue:.2g} users, "
                                             f"{p_seeds:.2g} seeds; 2 seeds)")
    # no test over seeds from one seed, and none from a run against itself
    assert seed_comparison(mine[:1], theirs[:1]) is None and seed_comparison(mine, mine) == 1.0
    # the same difference on both seeds (HR@20: the same number of extra hits) leaves no spread: no p, not p 0
    hits = [np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])]
    assert seed_comparison(hits, [np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0])]) is None


def test_a_runs_csv_is_tested_over_the_seeds_means(tmp_path):
    """benchmarks/significance.py --runs_csv: tables without per-user values get the seed-level test only."""
    import subprocess
    import sys
    from pathlib import Path

    ndcg = {"LUMOS-llm": [0.081, 0.079, 0.084], "FedSASRec": [0.077, 0.078, 0.080]}
    lines = ["run,seed,status,ndcg@20,hit@20"] + [f"{run},{2020 + i},ok,{v},{2 * v}" for run, values in ndcg.items()
                                                   for i, v in enumerate(values)]
    lines.append("FedSASRec,2023,failed,,")  # a failed run is not a seed
    (tmp_path / "runs.csv").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "significance.py"
    subprocess.run([sys.executable, str(script), f"--runs_csv={tmp_path / 'runs.csv'}",
                    f"--output={tmp_path / 'out.md'}"], check=True, capture_output=True)
    [row] = [line for line in (tmp_path / "out.md").read_text().splitlines() if line.startswith("| FedSASRec | 3 |")
             and "NDCG@20" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    relative = np.mean(ndcg["LUMOS-llm"]) / np.mean(ndcg["FedSASRec"]) - 1
    assert cells[6] == f"{relative:+.1%}" and cells[7] == "not kept"
    assert cells[8] == f"{ttest_rel(ndcg['LUMOS-llm'], ndcg['FedSASRec']).pvalue:.3g}"


def test_noise_drops_are_paired_by_seed_between_models(tmp_path):
    """benchmarks/noise_drop.py: each seed's relative drop from r = 0 to r, and the t-test between models' drops."""
    import subprocess
    import sys
    from pathlib import Path

    ndcg = {"A": [0.060, 0.058, 0.062], "A-noise0.3": [0.039, 0.036, 0.041],
            "B": [0.059, 0.061, 0.057], "B-noise0.3": [0.035, 0.037, 0.033], "B-noise0.1": [0.05, 0.05, 0.05]}
    lines = ["run,seed,status,ndcg@20,hit@20"] + [f"{run},{2020 + i},ok,{v},{2 * v}" for run, values in ndcg.items()
                                                   for i, v in enumerate(values)]
    (tmp_path / "toy-runs.csv").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "noise_drop.py"
    record = [f"--record_dir={tmp_path}", "--dataset=toy"]
    out = subprocess.run([sys.executable, str(script), *record, "--models=A,B"],
                         check=True, capture_output=True, text=True).stdout
    drop = {m: [n / c - 1 for n, c in zip(ndcg[f"{m}-noise0.3"], ndcg[m])] for m in "AB"}
    assert f"| A | {drop['A'][0]:+.1%} | {drop['A'][1]:+.1%} | {drop['A'][2]:+.1%} |" in out
    gap = np.mean(np.subtract(drop["A"], drop["B"])) * 100
    assert f"| A vs B | {gap:+.1f} | {ttest_rel(drop['A'], drop['B']).pvalue:.2g} |" in out
    # r = 0.1 exists for B only: no seed has both models there
    failed = subprocess.run([sys.executable, str(script), *record, "--models=A,B", "--ratio=0.1"],
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "0 seed(s)" in failed.stderr


def test_shipped_plans_name_only_their_own_runs():
    from recbole_lumos.benchmark import plan_path, read_plan, select_runs
    from recbole_lumos.paths import PROPERTIES

    for name in ("head-study", "robustness", "head-to-head"):
        path = plan_path(name)
        runs, seeds = select_runs(read_plan(path))
        with open(path) as f:
            sections = yaml.safe_load(f).get("sections") or {}
        assert seeds == [2020, 2021, 2022] and runs
        assert {n for names in sections.values() for n in names} <= {name for name, _, _ in runs}
    # the head-to-head compares the default plan's runs (runs_from), in a folder of its own, with its own settings
    default_runs = {name: model for name, model, _ in select_runs(read_plan(str(PROPERTIES / "benchmark.yaml")))[0]}
    head_to_head = select_runs(read_plan(plan_path("head-to-head")))[0]
    assert {name: model for name, model, _ in head_to_head} == default_runs
    assert all(settings["epochs"] == 1000 for _, _, settings in head_to_head)
    with open(plan_path("head-to-head")) as f:
        assert yaml.safe_load(f)["runs_folder"] != "benchmark"


def test_runs_from_reads_another_plans_runs_and_refuses_both_and_chains(in_tmp):
    from recbole_lumos.benchmark import read_plan, select_runs

    (in_tmp / "plans").mkdir()
    (in_tmp / "base.yaml").write_text("seeds: [1]\nruns:\n  A: {model: SASRec, learning_rate: 0.01}\n")
    (in_tmp / "plans" / "other.yaml").write_text("seeds: [2]\nsettings: {epochs: 7}\nruns_from: ../base.yaml\n")
    runs, seeds = select_runs(read_plan(str(in_tmp / "plans" / "other.yaml")))
    assert seeds == [2] and runs == [("A", "SASRec", {"epochs": 7, "learning_rate": 0.01})]
    (in_tmp / "plans" / "both.yaml").write_text("runs_from: ../base.yaml\nruns:\n  B: {model: SASRec}\n")
    with pytest.raises(LumosError, match="not both"):
        read_plan(str(in_tmp / "plans" / "both.yaml"))
    (in_tmp / "plans" / "missing.yaml").write_text("runs_from: ../nowhere.yaml\n")
    with pytest.raises(LumosError, match="does not exist: check runs_from in"):
        read_plan(str(in_tmp / "plans" / "missing.yaml"))
    (in_tmp / "plans" / "self.yaml").write_text("runs_from: self.yaml\n")  # a cycle is an error, not a recursion
    with pytest.raises(LumosError, match="has runs_from itself"):
        read_plan(str(in_tmp / "plans" / "self.yaml"))


def test_views_phase_keeps_to_the_benchmarks_thread_budget(tiny_data, in_tmp, monkeypatch):
    """--workers x --threads bounds the views phase too (it runs in this process), not only the runs' processes."""
    from recbole_lumos import benchmark

    seen = []
    monkeypatch.setattr(benchmark, "prepare_views", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(benchmark, "run_one", lambda *a, **k: "not run in this test")
    (in_tmp / "plan.yaml").write_text("seeds: [1]\nruns:\n  LUMOS-embedding: {model: LUMOS, views: embedding}\n")
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data)))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert run_lumos.main(["--benchmark", "--dataset=tiny", "--benchmark_file=plan.yaml",
                               "--config_files=tiny.yaml", "--workers=1", "--threads=1", "--runs_dir=runs",
                               "--output_dir=out"]) == 0
        assert seen == [1] and torch.get_num_threads() == 3  # one thread while generating, the default restored
    finally:
        torch.set_num_threads(before)


def test_benchmark_refuses_a_bad_worker_or_thread_count_in_one_line(in_tmp, capsys):
    (in_tmp / "plan.yaml").write_text(PLAN)
    for bad, name in (("--workers=x", "workers"), ("--threads=0", "threads")):
        assert run_lumos.main(["--benchmark", "--benchmark_file=plan.yaml", "--report_only=True", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name} must be a whole number >= 1" in err


def test_a_rebuild_keeps_the_notes_including_one_written_below_the_end_marker(tmp_path):
    from recbole_lumos.benchmark import NOTES_END, NOTES_START, kept_notes

    md = tmp_path / "table.md"
    md.write_text(f"# old table\n\n{NOTES_START}\n- first note\n{NOTES_END}\n- second note, added below\n")
    assert kept_notes(str(md)) == "- first note\n- second note, added below"
    md.write_text(f"# old table\n\n{NOTES_START}\n- only note\n{NOTES_END}\n")
    assert kept_notes(str(md)) == "- only note"
    assert kept_notes(str(tmp_path / "absent.md")) == "(none yet)"


def test_every_model_family_lists_the_same_test_users_in_the_same_order(tmp_path):
    """The paired tests pair one run's i-th test user with another's i-th (significance.py): RecBole's datasets and
    the plugin's must list the same (user, target) rows in the same order, also where that order is not the ids'."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_lumos.quick_start import build_config
    from tests.conftest import write_tiny_dataset

    root = write_tiny_dataset(str(tmp_path), name="interleaved")
    path = os.path.join(root, "interleaved", "interleaved.inter")
    with open(path) as f:
        header, *lines = f.read().splitlines()
    with open(path, "w") as f:  # users' events interleave in time (each user's own order kept)
        f.write(header + "\n")
        for line in lines:
            user, item, rating, stamp = line.split("\t")
            f.write(f"{user}\t{item}\t{rating}\t{int(float(stamp)) % 1000 * 1000 + (37 * int(user)) % 1000}\n")
    orders = {}
    for model in ("SASRec", "GRU4Rec", "BERT4Rec", "FedSASRec", "LUMOS"):
        config = build_config(model, "interleaved", config_dict=tiny_settings(root))
        init_seed(config["seed"], config["reproducibility"])
        _, _, test_data = data_preparation(config, create_dataset(config))
        rows = [batch[0] for batch in test_data]
        orders[model] = [np.concatenate([r[config[field]].numpy() for r in rows])
                         for field in ("USER_ID_FIELD", "ITEM_ID_FIELD")]
    users, targets = orders["SASRec"]
    assert len(users) == 25 and np.any(np.diff(users) < 0)  # every user, in an order that is not the ids'
    for model, (model_users, model_targets) in orders.items():
        assert np.array_equal(model_users, users) and np.array_equal(model_targets, targets), model


def test_by_history_length_splits_the_users_and_repeats_the_tables_test_over_all(tmp_path, monkeypatch):
    """benchmarks/by_history_length.py: groups partition the test users without splitting a length, and its 'all'
    row is the benchmark table's own comparison cell."""
    import subprocess
    import sys
    from pathlib import Path

    from recbole_lumos.benchmark import comparison_cell
    from recbole_lumos.record import per_user_path, write_per_user
    from tests.conftest import write_tiny_dataset

    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(str(tmp_path / "dataset"))
    rng = np.random.default_rng(3)
    values = {(run, seed): {"ndcg@20": rng.random(25), "hit@20": rng.integers(0, 2, 25).astype(float)}
              for run in ("R", "B") for seed in (1, 2)}
    write_per_user(per_user_path(str(tmp_path), "tiny"), values)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "by_history_length.py"
    out = subprocess.run([sys.executable, str(script), "--dataset=tiny", f"--record_dir={tmp_path}", "--reference=R",
                          "--runs=B", "--groups=3"], check=True, capture_output=True, text=True).stdout
    ndcg_rows = out.split("## HR@20")[0].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in ndcg_rows if line.startswith("| ")][1:]
    groups, (everyone,) = rows[:-1], rows[-1:]
    assert everyone[:2] == ["all", "25"] and sum(int(g[1]) for g in groups) == 25 and len(groups) >= 2
    spans = [[int(x) for x in g[0].split("-")] for g in groups]
    assert all(earlier[-1] < later[0] for earlier, later in zip(spans, spans[1:]))  # no length in two groups
    mine, theirs = [values["R", s]["ndcg@20"] for s in (1, 2)], [values["B", s]["ndcg@20"] for s in (1, 2)]
    assert everyone[3] == comparison_cell(mine, theirs)
    # each group's cell pairs the users whose training items (their lines in the .inter file, less 2) fall in it,
    # in the test loader's order
    from recbole.data import create_dataset, data_preparation

    from recbole_lumos.quick_start import build_config

    config = build_config("SASRec", "tiny", config_dict={"show_progress": False})
    dataset = create_dataset(config)
    _, _, test_data = data_preparation(config, dataset)
    ids = np.concatenate([batch[0][config["USER_ID_FIELD"]].numpy() for batch in test_data])
    lines = (tmp_path / "dataset" / "tiny" / "tiny.inter").read_text().splitlines()[1:]
    per_token = collections.Counter(line.split("\t")[0] for line in lines)
    lengths = np.array([per_token[token] - 2 for token in dataset.id2token(config["USER_ID_FIELD"], ids)])
    for group, (low, *high) in zip(groups, spans):
        mask = (lengths >= low) & (lengths <= (high or [low])[0])
        assert int(group[1]) == mask.sum()
        assert group[3] == comparison_cell([m[mask] for m in mine], [t[mask] for t in theirs])


def write_record(folder, dataset, rows, per_user):
    """A report's committed record: the runs CSV (``rows``), a curve point per row, the per-user archive."""
    from recbole_lumos.benchmark import write_csv
    from recbole_lumos.record import per_user_path, write_per_user

    os.makedirs(folder, exist_ok=True)
    write_csv(os.path.join(folder, f"{dataset}-runs.csv"), rows)
    write_csv(os.path.join(folder, f"{dataset}-curves.csv"),
              [{"run": r["run"], "seed": r["seed"], "seconds": 1.0, "epoch": 1, "valid_ndcg@20": 0.1} for r in rows])
    write_per_user(per_user_path(folder, dataset), per_user)


def recorded_row(run, model, seed=1, written="20261207-041827", **cells):
    return {"run": run, "model": model, "seed": seed, "status": "ok", "ndcg@20": 0.08, "hit@20": 0.2,
            "valid_ndcg@20": 0.09, "wall_time_s": 10.0, "peak_memory_mb": 100.0, "settings_digest": "sha1:abc",
            "result_file": f"{run}/seed{seed}/tiny/{model}-seed{seed}-{written}.json", **cells}


def test_renamed_runs_keep_their_numbers_and_curves_under_the_new_name(tmp_path):
    from recbole_lumos.record import read_record, rename_runs

    values = {"ndcg@20": np.array([0.0, 0.5]), "hit@20": np.array([0.0, 1.0])}
    write_record(tmp_path, "tiny", [recorded_row("CL4SRec", "CL4SRec", tuning="Best of 8 trials of CL4SRec"),
                                    recorded_row("SASRec", "SASRec")],
                 {("CL4SRec", 1): values, ("SASRec", 1): values})
    rename_runs(str(tmp_path), "tiny", {"CL4SRec": {"run": "LUMOS-random-central", "model": "LUMOS",
                                                    "tuning": "Best of 8 trials of the former CL4SRec"}})
    rows, curves, per_user = read_record(str(tmp_path), "tiny")
    assert set(rows) == {("LUMOS-random-central", 1), ("SASRec", 1)} and set(curves) == set(rows) == set(per_user)
    renamed = rows["LUMOS-random-central", 1]
    assert renamed["model"] == "LUMOS" and renamed["tuning"] == "Best of 8 trials of the former CL4SRec"
    assert renamed["ndcg@20"] == 0.08 and renamed["settings_digest"] == "sha1:abc"  # the numbers are untouched
    assert rows["SASRec", 1]["model"] == "SASRec" and "tuning" not in curves["LUMOS-random-central", 1][0]
    assert np.array_equal(per_user["LUMOS-random-central", 1]["hit@20"], values["hit@20"])
    with pytest.raises(ValueError, match="already holds run"):  # never two rows under one name
        rename_runs(str(tmp_path), "tiny", {"SASRec": {"run": "LUMOS-random-central"}})


def test_a_report_never_shows_a_result_under_a_name_whose_code_did_not_produce_it(tmp_path, monkeypatch):
    """A model whose name now names other code (REDEFINED_MODELS): its results written before are the former
    code's. They are read neither from the record nor from a runs folder, and a run of it is not 'finished'; a
    recorded row of another model than the plan's row is not read either."""
    from recbole_lumos import benchmark
    from recbole_lumos.record import read_record

    monkeypatch.setitem(benchmark.REDEFINED_MODELS, "CL4SRec", "20261208-000000")
    write_record(tmp_path / "out", "tiny", [recorded_row("CL4SRec", "CL4SRec"),
                                            recorded_row("CL4SRec", "CL4SRec", seed=2, written="20261209-101500"),
                                            recorded_row("Renamed", "CL4SRec")], {})
    runs = [("CL4SRec", "CL4SRec", {}), ("Renamed", "LUMOS", {})]
    rows, _, _ = benchmark.collect(runs, [1, 2], str(tmp_path / "runs"), read_record(str(tmp_path / "out"), "tiny"))
    assert [(r["run"], r["seed"], r["status"]) for r in rows] == [
        ("CL4SRec", 1, "not run"), ("CL4SRec", 2, "ok"), ("Renamed", 1, "not run"), ("Renamed", 2, "not run")]
    recorded = read_record(str(tmp_path / "out"), "tiny")[0]
    assert not benchmark.in_record(recorded["CL4SRec", 1], {}, "CL4SRec")  # the former code's: it runs again
    # a runs folder holding the former code's result: neither finished nor reported
    folder = tmp_path / "runs" / "CL4SRec" / "seed1"
    (folder / "tiny").mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "tiny" / "CL4SRec-seed1-20261207-041827.json").write_text("{}")
    assert not benchmark.is_finished(str(folder), {"seed": 1}, "CL4SRec")
    assert benchmark.is_finished(str(folder), {"seed": 1}, "SASRec")  # the guard is the redefined models' alone
    rows, _, _ = benchmark.collect(runs[:1], [1], str(tmp_path / "runs"), ({}, {}, {}))
    assert rows[0]["status"] == "not run"


def test_the_report_names_rows_with_other_settings_or_other_view_sets_than_the_reference():
    from recbole_lumos.benchmark import other_settings, view_set_notes

    def row(run, seed, kind=None, key=None, digest="sha1:a"):
        views = {"view_kind": kind, "view_set": key} if kind else {}
        return {"run": run, "seed": seed, "status": "ok", "settings_digest": digest, **views}

    rows = [row("LUMOS-llm", 1, "llm", "k1" * 8), row("LUMOS-llm", 2, "llm", "k1" * 8),
            row("LUMOS-llm-shortlist", 1, "llm", "k2" * 8), row("LUMOS-llm-no-future", 1, "llm", "k1" * 8),
            row("LUMOS-embedding", 1, "embedding", "e1" * 8), row("SASRec", 1, "none"),
            row("Old", 1, digest="sha1:b"), row("LUMOS-llm-aligned-prefix", 1, "llm"), row("SASRec", 2)]
    # RecBole's SASRec reads no views: an old row of it (seed 2, no view kind recorded) is not unknown
    runs = [(r, "SASRec" if r == "SASRec" else "LUMOS", {}) for r in dict.fromkeys(r["run"] for r in rows)]
    notes = view_set_notes(runs, rows, "LUMOS-llm")
    assert notes == [
        "- View sets: LUMOS-llm read the llm view set `k1k1k1k1k1k1`; rows compared with it that read another llm "
        "view set: LUMOS-llm-shortlist (`k2k2k2k2k2k2`).",
        "- View sets unknown (written before result files named the view set they read): Old, "
        "LUMOS-llm-aligned-prefix."]
    same = [r for r in rows if r["run"] != "LUMOS-llm-shortlist"]
    assert "every other row that names its llm view set read the same one" in view_set_notes(runs, same, "LUMOS-llm")[0]
    planned = {(r["run"], r["seed"]): "sha1:a" for r in rows}
    assert other_settings(rows, planned) == "Old (1)"
    assert other_settings(rows, None) == ""


def test_a_run_takes_its_datasets_settings_and_a_bad_by_dataset_is_refused(in_tmp):
    from recbole_lumos.benchmark import read_plan, select_runs

    (in_tmp / "plan.yaml").write_text("settings: {epochs: 5}\nruns:\n  F:\n    model: SASRecF\n    by_dataset:\n"
                                      "      ml-100k: {selected_features: [class]}\n")
    plan = read_plan(str(in_tmp / "plan.yaml"))
    assert select_runs(plan, dataset="ml-100k")[0] == [("F", "SASRecF", {"epochs": 5, "selected_features": ["class"]})]
    assert select_runs(plan, dataset="other")[0] == [("F", "SASRecF", {"epochs": 5})]
    (in_tmp / "bad.yaml").write_text("runs:\n  F: {model: SASRecF, by_dataset: [ml-100k]}\n")
    with pytest.raises(LumosError, match="by_dataset must map dataset names to settings"):
        read_plan(str(in_tmp / "bad.yaml"))


def test_a_result_names_the_view_set_it_trained_on():
    from types import SimpleNamespace

    from recbole_lumos.augment.base import Catalogue, ViewShape
    from recbole_lumos.augment.embedding_views import EmbeddingViewBuilder
    from recbole_lumos.quick_start import view_set

    def trainer(views):
        return SimpleNamespace(clients=SimpleNamespace(views=views))

    llm = SimpleNamespace(name="llm", cache=lambda: SimpleNamespace(key="f" * 64))
    assert view_set(trainer(llm)) == {"kind": "llm", "key": "f" * 64}
    assert view_set(trainer(SimpleNamespace(name="llm+aligned-prefix", base=llm)))["key"] == "f" * 64
    assert view_set(trainer(SimpleNamespace(name="llm+perturbed"))) == {"kind": "llm", "key": None}  # unknown
    assert view_set(trainer(SimpleNamespace(name="random"))) == {"kind": "random", "key": None}
    assert view_set(SimpleNamespace()) == view_set(trainer(None)) == {"kind": "none", "key": None}
    catalogue = Catalogue(["", "Toy Story | Comedy", "Heat | Action"], ["", "Toy Story", "Heat"])
    keys = [view_set(trainer(EmbeddingViewBuilder(catalogue, shape=ViewShape(), seed=seed)))["key"]
            for seed in (1, 1, 2)]
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) == 64  # the same views, the same key; another seed, another


def test_an_llm_run_records_the_key_of_the_view_cache_it_read(tiny_data, in_tmp, one_thread):
    from recbole_lumos.quick_start import run
    from tests.conftest_tiny_llm import make_tiny_llm

    llm = make_tiny_llm(in_tmp / "llm")
    result = run("LUMOS", "tiny", config_dict=tiny_settings(
        tiny_data, epochs=1, views="llm", llm_model=llm, llm_dtype="float32", views_cache_dir=str(in_tmp / "views")))
    views = json.loads(open(result["result_file"]).read())["views"]
    assert views["kind"] == "llm"
    assert [path.name for path in (in_tmp / "views").glob("*.jsonl")] == [f"tiny-llm-{views['key'][:24]}.jsonl"]
