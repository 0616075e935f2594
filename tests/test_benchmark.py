"""--benchmark: every (run, seed) in its own process, a table of mean ± std, error rows, resume."""
import csv
import os

import numpy as np
import yaml

import run_lumos
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
seeds: [1]
sections:
  "Plain": [FedSASRec]
  "With views and DP": [LUMOS, LUMOS-dp]
runs:
  FedSASRec: {model: FedSASRec}
  LUMOS: {model: LUMOS, views: random}
  LUMOS-dp: {model: LUMOS, views: random, aggregator: dp_fedavg, dp_epsilon: 4}
"""


def test_a_plan_with_sections_gets_one_table_each_with_the_columns_its_runs_measured(tiny_data, in_tmp):
    (in_tmp / "plan.yaml").write_text(SECTIONED_PLAN)
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_settings(tiny_data)))
    args = ["--benchmark", "--dataset=tiny", "--benchmark_file=plan.yaml", "--config_files=tiny.yaml", "--workers=2",
            "--runs_dir=runs", "--output_dir=out"]
    assert run_lumos.main(args) == 0
    text = (in_tmp / "out" / "tiny.md").read_text()
    assert text.startswith("# Study on tiny\n")
    plain, views = text.split("### Plain")[1].split("### With views and DP")
    assert "| FedSASRec |" in plain and "Head drift" not in plain and "DP epsilon" not in plain
    header = next(line for line in views.splitlines() if line.startswith("| Run "))
    assert "Head drift" in header and "L_tri (trained head)" in header and "DP epsilon" in header
    dp_row = next(line for line in views.splitlines() if line.startswith("| LUMOS-dp |"))
    epsilon = float(dp_row.split(" | ")[header.split(" | ").index("DP epsilon")])
    assert 3.98 <= epsilon <= 4.0  # the whole round budget ran (no early stop in 2 rounds): the target is spent


def test_shipped_plans_name_only_their_own_runs():
    from recbole_lumos.benchmark import load_plan, plan_path

    for name in ("head-study", "robustness"):
        path = plan_path(name)
        runs, seeds = load_plan(path)
        with open(path) as f:
            sections = yaml.safe_load(f).get("sections") or {}
        assert seeds == [2020, 2021, 2022] and runs
        assert {n for names in sections.values() for n in names} <= {name for name, _, _ in runs}


def test_benchmark_refuses_a_bad_worker_or_thread_count_in_one_line(in_tmp, capsys):
    (in_tmp / "plan.yaml").write_text(PLAN)
    for bad, name in (("--workers=x", "workers"), ("--threads=0", "threads")):
        assert run_lumos.main(["--benchmark", "--benchmark_file=plan.yaml", "--report_only=True", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name} must be a whole number >= 1" in err
