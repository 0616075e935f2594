"""llm_model takes a local folder or a hub id: a hub id is read from the hub's cache (fetched there when online)."""
import shutil

import pytest
from conftest_tiny_llm import make_tiny_llm

from recbole_lumos.augment.llm_backend import LLMBackend, weights_digest
from recbole_lumos.errors import LumosError


def hub_cache_with(folder, cache, repo_id="someone/tiny-chat", revision="0" * 40):
    """The layout the hub's client writes (models--org--name/refs/main -> snapshots/<revision>/files)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo_id


def test_a_hub_id_in_the_hub_cache_loads_like_a_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network: the cache must serve it
    folder = make_tiny_llm(tmp_path / "tiny")
    repo_id = hub_cache_with(folder, tmp_path / "hub")
    backend = LLMBackend(repo_id, dtype="float32", cache_dir=str(tmp_path / "hub"))
    assert backend.model.config.hidden_size == 64
    assert weights_digest(repo_id, str(tmp_path / "hub")) == weights_digest(str(folder))  # same files, same views


def test_a_model_neither_local_nor_on_the_hub_is_one_clear_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LumosError, match="llm_model 'someone/not-cached' is not a local folder") as error:
        LLMBackend("someone/not-cached", dtype="float32", cache_dir=str(tmp_path / "hub"))
    assert "\n" not in str(error.value)
