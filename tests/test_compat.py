"""RecBole 1.2.1 on today's stack: one test per breakage of ../shared/STACK.md, each failing without its fix.

The "without the fix" halves run RecBole in a fresh interpreter that does not import recbole_lumos.
"""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_lumos
from recbole_lumos import compat
from recbole_lumos.errors import LumosError


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_1_numpy_aliases_let_config_build():
    bare = run_python("from recbole.config import Config; Config(model='Pop', dataset='ml-100k')")
    assert bare.returncode != 0 and "np.float_" in bare.stderr  # RecBole alone breaks on numpy 2
    from recbole.config import Config
    from recbole.evaluator.metrics import NDCG

    Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})
    assert np.float_ is np.float64  # and the metrics that use np.float work
    ndcg = NDCG({"topk": [2], "metric_decimal_place": 4}).metric_info(np.array([[True, False]]), np.array([1]))
    assert ndcg[0].tolist() == [1.0, 1.0]


def test_2_recbole_checkpoints_load_on_torch_2_6_and_others_stay_safe(tmp_path):
    from recbole.config import Config

    path = tmp_path / "checkpoint.pth"
    torch.save({"config": Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})}, path)
    bare = run_python(f"import torch; torch.load({str(path)!r})")
    assert bare.returncode != 0 and "weights_only" in bare.stderr.replace("Weights only", "weights_only")
    namespace = {"__name__": "recbole.trainer.trainer", "torch": torch}  # a call made from RecBole's own code
    exec(f"checkpoint = torch.load({str(path)!r})", namespace)
    assert namespace["checkpoint"]["config"]["model"] == "Pop"
    with pytest.raises(Exception, match="[Ww]eights only"):
        torch.load(path)  # any other caller keeps torch's safe default


def test_3_4_pandas_token_seq_and_nan_fill(monkeypatch):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "state": "WARNING", "train_neg_sample_args": None,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                     "item": ["item_id", "movie_title", "release_year", "class"]},
    })
    dataset = create_dataset(config)
    titles = dataset.item_feat["movie_title"]  # token_seq: one array of word ids per item (breaks on pandas 3, #4)
    assert len(titles) == dataset.item_num and all(len(t) > 0 for t in titles[1:])  # row 0 is padding
    assert not dataset.item_feat["release_year"].isna().any()  # RecBole's fillna (#3)
    monkeypatch.setattr(pd, "__version__", "3.0.0")
    with pytest.raises(LumosError, match="pandas 2"):
        compat._check_pandas()


def test_5_anomaly_mode_is_off_after_import():
    bare = run_python("import recbole.model.sequential_recommender, torch; print(torch.is_anomaly_enabled())")
    assert bare.stdout.strip() == "True"  # RecBole's sine.py turns it on at import
    ours = run_python("import recbole_lumos, torch; print(torch.is_anomaly_enabled())")
    assert ours.stdout.strip() == "False"
    assert not torch.is_anomaly_enabled()


def test_6_a_current_ray_tune_imports_beside_recbole():
    import ray
    from ray import tune  # noqa: F401  (ray 2.6.3, RecBole's pin, fails here)
    import recbole

    assert tuple(int(x) for x in ray.__version__.split(".")[:2]) >= (2, 40)
    assert recbole.__version__ == "1.2.1"


def test_7_ensure_dir_survives_a_run_starting_beside_it(tmp_path, monkeypatch):
    """Another process creates log/<Model> between RecBole's exists() check and its makedirs()."""
    import importlib

    monkeypatch.setattr(os.path, "exists", lambda path: False)  # what the check saw before the other run won
    for name in ("recbole.utils.logger", "recbole.trainer.trainer", "recbole.data.utils",
                 "recbole.data.dataset.dataset"):
        importlib.import_module(name).ensure_dir(str(tmp_path))  # already there: no FileExistsError


def test_apply_is_idempotent():
    compat.apply()
    compat.apply()
    assert getattr(torch.load, "recbole_lumos_patched", False)
    assert torch.load.__wrapped__ is not None and not getattr(torch.load.__wrapped__, "recbole_lumos_patched", False)
    assert recbole_lumos.__version__


def test_the_patches_apply_inside_a_ray_worker():
    """A Ray worker is a fresh interpreter: importing recbole_lumos there patches RecBole as in the driver."""
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:

        @ray.remote
        def probe():
            import numpy
            import torch as worker_torch

            import recbole_lumos  # noqa: F401
            from recbole.config import Config

            Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})
            return hasattr(numpy, "float_"), worker_torch.is_anomaly_enabled()

        assert ray.get(probe.remote(), timeout=120) == (True, False)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_1_metrics_work_in_a_process_that_never_built_a_config():
    """A model reloaded with load_data_and_model (its Config is unpickled, never built) is then evaluated by
    RecBole's metrics, which use np.float: the aliases must exist from import on (fresh interpreter)."""
    import subprocess
    import sys

    code = ("import numpy as np, recbole_lumos\n"
            "from recbole.evaluator.metrics import NDCG\n"
            "m = NDCG({'topk': [2], 'metric_decimal_place': 4})\n"
            "print(m.metric_info(np.array([[True, False]]), np.array([1]))[0, 1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert float(out.stdout.strip()) == 1.0


@pytest.mark.parametrize("version, ok", [("2.6.3", False), ("2.39.0", False), ("2.40.0", True), ("3.1.0", True)])
def test_ray_features_say_in_one_line_how_to_get_a_current_ray(monkeypatch, version, ok):
    """RecBole pins ray<=2.6.3, which pip installs with it: --tune names the fix instead of failing deep in Ray."""
    import types

    from recbole_lumos.compat import require_ray

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(__version__=version))
    if ok:
        require_ray("--tune")
    else:
        with pytest.raises(LumosError, match=rf"--tune needs Ray >= 2\.40 \(found {version}\): pip install"):
            require_ray("--tune")


def test_a_ray_that_fails_on_import_is_named_as_such(monkeypatch):
    from recbole_lumos.compat import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray then raises ImportError, as 2.6.3 does on numpy 2
    with pytest.raises(LumosError, match="found one that fails on import: ModuleNotFoundError"):
        require_ray("--tune")
