"""run_lumos.py: class lookup, RecBole's models through the same CLI, result files, one-line errors."""
import json
import os
import subprocess
import sys

import pytest

import run_lumos
from recbole_lumos.quick_start import run
from tests.conftest import tiny_settings, write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(capsys, *args):
    code = run_lumos.main(list(args))
    return code, capsys.readouterr()


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_recbole_models_run_with_the_plugin_protocol(tiny_data, in_tmp, model):
    result = run(model, "tiny", config_dict=tiny_settings(tiny_data, epochs=1))
    record = json.load(open(result["result_file"]))
    assert set(record["test_result"]) == {"hit@10", "hit@20", "ndcg@10", "ndcg@20"}
    assert record["best_valid_score"] == record["best_valid_result"]["ndcg@20"]  # model selection on NDCG@20


def test_command_line_beats_config_file_beats_plugin_defaults(tiny_data, in_tmp):
    """RecBole's precedence through the plugin: overall.yaml < --config_files < --key=value."""
    from recbole_lumos.quick_start import build_config

    extra = in_tmp / "extra.yaml"
    extra.write_text("valid_metric: Hit@10\ntopk: [5, 10]\n")
    config = build_config("SASRec", "tiny", [str(extra)], tiny_settings(tiny_data, topk=[10, 20]))
    assert config["valid_metric"] == "Hit@10" and config["topk"] == [10, 20]
    assert build_config("SASRec", "tiny", config_dict=tiny_settings(tiny_data))["valid_metric"] == "NDCG@20"


def test_cli_prints_the_summary_and_accepts_overrides_and_config_files(tiny_data, in_tmp, capsys):
    extra = in_tmp / "extra.yaml"
    extra.write_text("n_layers: 1\nhidden_size: 16\ninner_size: 32\n")
    code, out = cli(capsys, "--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data}", f"--config_files={extra}",
                    "--epochs=1", "--show_progress=False", "--MAX_ITEM_LIST_LENGTH=10", "--state=WARNING",
                    "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}")
    assert code == 0, out.err
    assert "test   HR@10" in out.out and "NDCG@20" in out.out


def test_unknown_model_lists_what_exists(capsys):
    code, out = cli(capsys, "--model=NoSuchRec")
    assert code == 2 and out.err.count("\n") == 1
    assert ("Unknown model 'NoSuchRec'" in out.err and "LUMOS" in out.err and "SASRec" in out.err
            and "GRU4Rec" in out.err)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset=no-such-data"], "Unknown dataset 'no-such-data'"),
        (["--learning_rate=abc"], "learning_rate"),
        (["--epochs=1.5"], "epochs"),
        (["--topk=[0]"], "topk"),
        (["--valid_metric=MRR@10"], "valid_metric"),
        (["--config_files=/no/such.yaml"], "does not exist"),
        (["--views=telepathy", "--epochs=1"], "views must be one of llm, embedding, random"),
        (["--client_fraction=2.0"], "client_fraction"),
        (["--eval_step=0"], "eval_step must be at least 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_data, in_tmp, capsys, args, message):
    base = [f"--data_path={tiny_data}", "--dataset=tiny", "--state=WARNING", "--show_progress=False",
            "--MAX_ITEM_LIST_LENGTH=10"]
    code, out = cli(capsys, *base, *args)
    assert code == 2, out
    assert message in out.err and out.err.startswith("error: ") and out.err.count("\n") == 1


def test_malformed_atomic_file_is_reported_with_its_line(tmp_path, in_tmp, capsys):
    root = write_tiny_dataset(str(tmp_path))
    with open(os.path.join(root, "tiny", "tiny.inter"), "a") as f:
        f.write("1\t2\tnot-a-number\t5\n")
    code, out = cli(capsys, f"--data_path={root}", "--dataset=tiny")
    assert code == 2 and "tiny.inter" in out.err and "line" in out.err


def test_process_exit_status_and_no_traceback():
    proc = subprocess.run([sys.executable, "run_lumos.py", "--model=NoSuchRec"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Unknown model" in proc.stderr


@pytest.mark.parametrize("flags,message", [(["--bogus"], "unknown flag(s) --bogus"),
                                           (["--benchmark", "--tune"], "choose one")])
def test_bad_flags_are_one_line_and_exit_2(capsys, flags, message):
    code, out = cli(capsys, *flags)
    assert code == 2 and out.err.count("\n") == 1 and message in out.err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_runs_nothing(capsys, in_tmp, flag):
    code, out = cli(capsys, "--model=LUMOS", flag)
    assert code == 0 and not os.listdir(in_tmp)
    assert out.out.startswith("usage: recbole-lumos [--benchmark | --tune]")
    for mode, example in [("--benchmark", "recbole-lumos --benchmark -d"), ("--tune", "recbole-lumos --tune -m"),
                          ("(none)", "recbole-lumos -m LUMOS -d ml-100k")]:
        assert f"  {mode}  " in out.out and example in out.out
    for option in ("-m, --model", "-d, --dataset", "--config_files", "--key=value", "docs/config.md"):
        assert option in out.out


def _write_inter(root, name, header, rows):
    os.makedirs(os.path.join(root, name))
    with open(os.path.join(root, name, f"{name}.inter"), "w") as f:
        f.write(header + "\n" + "".join(rows))


@pytest.mark.parametrize(
    "header,rows,message",
    [
        ("user_id:token\titem_id:token\trating:float", ["1\t2\t3\n", "1\t3\t4\n"],
         "has no column timestamp (its header: user_id, item_id, rating), which load_col.inter loads"),
        ("user_id:token\titem_id:token\trating:float\ttimestamp:float", [], "has a header and no rows"),
    ],
)
def test_inter_file_without_a_loaded_column_or_rows_is_one_line(tmp_path, in_tmp, capsys, header, rows, message):
    _write_inter(str(tmp_path), "bad", header, rows)
    code, out = cli(capsys, f"--data_path={tmp_path}", "--dataset=bad")
    assert code == 2 and message in out.err and out.err.count("\n") == 1, out.err


def test_positional_argument_is_one_line_and_exit_2(capsys):
    code, out = cli(capsys, "LUMOS")
    assert code == 2 and out.err == ("error: unexpected argument 'LUMOS': settings are --key=value or --key value "
                                     "(see --help)\n")


@pytest.fixture
def fake_run(monkeypatch):
    """The run the command line reaches, recorded instead of trained."""
    import recbole_lumos.quick_start as quick_start

    calls = []

    def run(model, dataset, config_file_list=None, config_dict=None):
        calls.append({"model": model, "dataset": dataset, "config_files": config_file_list, **config_dict})
        return {"model": model, "dataset": dataset, "seed": 1, "wall_time_s": 0, "best_valid_result": {},
                "test_result": {}, "result_file": "none"}

    monkeypatch.setattr(quick_start, "run", run)
    return calls


@pytest.mark.parametrize("args", [["-m", "LUMOS", "-d", "ml-100k"], ["-m=LUMOS", "-d=ml-100k"],
                                  ["--model", "LUMOS", "--dataset", "ml-100k"], ["--model=LUMOS", "--dataset=ml-100k"],
                                  ["--model", "LUMOS"]])
def test_model_and_dataset_options_in_recboles_forms_reach_the_run(capsys, fake_run, args):
    code, out = cli(capsys, *args)
    assert code == 0, out.err
    assert [(c["model"], c["dataset"]) for c in fake_run] == [("LUMOS", "ml-100k")]


def test_key_value_and_key_space_value_set_the_same_config(capsys, fake_run):
    assert cli(capsys, "--epochs=3", "--learning_rate=-1e-3", "--config_files=a.yaml b.yaml")[0] == 0
    assert cli(capsys, "--epochs", "3", "--learning_rate", "-1e-3", "--config_files", "a.yaml b.yaml")[0] == 0
    assert fake_run[0] == fake_run[1]
    assert fake_run[0]["epochs"] == 3 and fake_run[0]["learning_rate"] == -1e-3  # RecBole's str -> value parsing
    assert fake_run[0]["config_files"] == ["a.yaml", "b.yaml"]  # space separated, as in RecBole


@pytest.mark.parametrize("args,message", [(["--epochs", "--benchmark"], "unknown flag(s) --epochs"),
                                          (["--tune", "LUMOS"], "unexpected argument 'LUMOS'"),
                                          (["-m"], "-m needs a value"),
                                          (["-x", "1"], "unexpected argument '-x'")])
def test_a_key_without_its_value_is_one_error_line(capsys, fake_run, args, message):
    code, out = cli(capsys, *args)
    assert code == 2 and out.err.startswith("error: ") and out.err.count("\n") == 1 and message in out.err
    assert not fake_run


@pytest.mark.parametrize("value,expected", [("A,B", ["A", "B"]), ("[A,B]", ["A", "B"]), ("['A','B']", ["A", "B"]),
                                            ("[A, B]", ["A", "B"]), ("A", ["A"]), ("2020,2021", [2020, 2021]),
                                            ("[2020,2021]", [2020, 2021]), ("2020", [2020])])
def test_every_list_syntax_gives_the_same_list(value, expected):
    from recbole_lumos.cli import convert_values, list_option

    assert list_option(convert_values({"runs": value})["runs"]) == expected


@pytest.mark.parametrize("value", ["future,counterfactual", "[future,counterfactual]", "['future','counterfactual']"])
def test_a_list_key_takes_the_comma_form_too(capsys, fake_run, value):
    assert cli(capsys, f"--tri_views={value}", "--topk=10,20", "--metrics=[Hit,NDCG]", "--views=llm,x")[0] == 0
    assert fake_run[0]["tri_views"] == ["future", "counterfactual"] and fake_run[0]["topk"] == [10, 20]
    assert fake_run[0]["metrics"] == ["Hit", "NDCG"]  # brackets make a list of any key
    assert fake_run[0]["views"] == "llm,x"  # a text key keeps its comma: it is no list


@pytest.mark.parametrize("runs", [["--runs=SASRec,NoSuchRun"], ["--runs=[SASRec,NoSuchRun]"],
                                  ["--runs=['SASRec','NoSuchRun']"], ["--runs", "SASRec,NoSuchRun"]])
def test_benchmark_runs_take_every_list_syntax(in_tmp, capsys, runs):
    (in_tmp / "plan.yaml").write_text("seeds: [1]\nruns:\n  SASRec: {model: SASRec}\n")
    code, out = cli(capsys, "--benchmark", "--benchmark_file=plan.yaml", *runs)
    assert code == 2 and out.err.startswith("error: Unknown benchmark run(s) NoSuchRun: choose among SASRec"), out.err
    assert os.listdir(in_tmp) == ["plan.yaml"]  # refused before any run or report


def test_recbole_model_divergence_is_one_line(tiny_data, in_tmp, capsys):
    code, out = cli(capsys, "--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data}", "--epochs=3",
                    "--learning_rate=1e6", "--state=WARNING", "--show_progress=False", "--MAX_ITEM_LIST_LENGTH=10")
    assert code == 2 and out.err.startswith("error: training diverged") and out.err.count("\n") == 1, out.err


def test_a_runs_peak_memory_is_its_own_not_its_parents():
    """A benchmark starts each run from a parent that may hold an LLM: the run's peak is the run's own."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(1_500 * 2**20, dtype=np.uint8)  # 1.5 GB, touched: resident in this (parent) process
    out = subprocess.run([sys.executable, "-c",
                          "from recbole_lumos.quick_start import peak_memory_mb; print(peak_memory_mb())"],
                         capture_output=True, text=True, check=True).stdout
    assert 0 < float(out.strip().splitlines()[-1]) < 1_500 and ballast.sum() == ballast.size


def test_a_result_names_the_cpu_class_its_figures_come_from(tmp_path):
    from recbole_lumos.quick_start import cpu_class

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Other\n")
    assert cpu_class(str(cpuinfo)).startswith("AMD EPYC family 25 model 17 (avx2, avx512f, avx512_bf16; torch ")
