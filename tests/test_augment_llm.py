"""The LLM view builder end to end, on a tiny Llama built on the spot (same loading and decoding path as SmolLM2):
every view item is named by the LLM and reaches the tensors the losses read; the views have the shape DESIGN.md
asks; the per-client cache (reuse, one changed client, resume, torn line, runs sharing it); sampling; held-out
items; Ray."""
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import pytest
from conftest import tiny_settings, write_tiny_dataset
from conftest_tiny_llm import HISTORIES, FakeDataset, check, make_tiny_llm, tiny_catalogue

from recbole_lumos.augment.base import ViewShape
from recbole_lumos.augment.cache import ViewCache, fcntl
from recbole_lumos.augment.catalogue_decoding import CatalogueDecoder
from recbole_lumos.augment.llm_backend import threads_for_free_cores
from recbole_lumos.augment.llm_views import LLMViewBuilder, build_llm_views
from recbole_lumos.federated.client_data import ClientData


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture
def make_builder(tiny_llm, tmp_path):
    def make(cache="cache", **overrides):
        options = dict(shape=ViewShape(future_items=3, swap_ratio=0.34, negative_items=2, window=4), batch_size=2,
                       cache_dir=tmp_path / cache, dataset_name="tiny")
        options.update(overrides)
        return LLMViewBuilder(tiny_catalogue(), dict(model=tiny_llm, dtype="float32"), **options)
    return make


REAL_DECODE = CatalogueDecoder.decode


class CountingDecoder:
    """Counts the clients the LLM is asked about (and can fail), around the real decoder; patch in ``.decode``."""

    def __init__(self, fail_after=None):
        self.clients = 0

        def decode(decoder, prefix, suffixes, *args, **kwargs):
            if fail_after is not None and self.clients >= fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.clients += len(suffixes)
            return REAL_DECODE(decoder, prefix, suffixes, *args, **kwargs)

        self.decode = decode


def records_of(builder):
    return {r["client"]: r for r in builder.cache().load().values()}


def test_every_view_item_is_named_by_the_llm_and_placed_where_the_model_reads(make_builder):
    builder = make_builder()
    views = builder.build(HISTORIES)
    check(views, HISTORIES)
    stats = builder.stats()
    assert stats["generated_clients"] == 3 and stats["tokens_processed"] > 0
    assert all(stats[f"{v}_llm_share"] == 1.0 for v in ("future", "rephrase", "counterfactual"))
    records = records_of(builder)
    for client, history in HISTORIES.items():
        named, v = records[str(client)]["named"], views[client]
        assert len(named["future"]) == 3 and v.future == history + named["future"]
        k = min(2, len(history))  # N: the same history ending in the LLM's contrary items
        assert len(named["counterfactual"]) == k and v.counterfactual == history[:-k] + named["counterfactual"]
        changed = [p for p, (a, b) in enumerate(zip(history, v.rephrase)) if a != b]
        assert [v.rephrase[p] for p in changed] == named["rephrase"]  # P: the LLM's items, in the shown window
        assert changed and min(changed) >= len(history) - 4
        assert not set(named["future"] + named["rephrase"] + named["counterfactual"]) & set(history)


def test_llm_items_reach_the_tensors_the_losses_read_and_n_is_read_where_the_anchor_is(make_builder):
    """Through ClientData, the layout the federated trainer hands to the losses (max length 4: the views are cut)."""
    histories = {1: [3, 6, 8, 7, 9, 10, 2], 2: [11, 12, 13, 1, 14]}
    builder = make_builder()
    views = builder.build(histories)
    records = records_of(builder)
    data = ClientData(histories, [np.array([1]), np.array([2])], views, max_len=4)
    batch = data.batch_of_users([0, 1])
    for row, client in enumerate(histories):
        anchor, (future, rephrase, counterfactual) = batch["anchor"][row], batch["views"][row]
        named = records[str(client)]["named"]
        assert set(named["future"]) <= set(future.tolist())
        assert set(named["rephrase"]) <= set(rephrase.tolist())
        assert set(named["counterfactual"]) <= set(counterfactual.tolist())
        assert (anchor > 0).sum() == (counterfactual > 0).sum()  # same last position
        assert anchor[:2].tolist() == counterfactual[:2].tolist()  # differs only in the last k = 2 items


def test_a_shortlist_keeps_each_view_near_or_far_from_the_history_in_the_embedding_space(make_builder):
    """llm_shortlist: F and P items among the K nearest to the history's centroid, N among the K farthest, each
    still named by the LLM (its share stays 1), and the views cached apart from the unshortlisted ones."""
    from recbole_lumos.augment.item_space import ItemSpace, load_encoder

    plain, short = make_builder(), make_builder(shortlist=4, encoder=load_encoder())
    assert plain.cache().path != short.cache().path
    views = short.build(HISTORIES)
    check(views, HISTORIES)
    assert all(short.stats()[f"{v}_llm_share"] == 1.0 for v in ("future", "rephrase", "counterfactual"))
    space = ItemSpace.from_texts(tiny_catalogue().texts, load_encoder())
    for client, history in HISTORIES.items():
        named = records_of(short)[str(client)]["named"]
        centroid = space.centroid(history, 0.9)
        near, far = space.ranked(centroid, set(history), 4), space.ranked(centroid, set(history), 4, farthest=True)
        assert set(named["future"] + named["rephrase"]) <= set(near)
        assert set(named["counterfactual"]) <= set(far)


def test_cache_is_reused_per_client(make_builder, monkeypatch):
    first = make_builder().build(HISTORIES)
    counting = CountingDecoder()
    monkeypatch.setattr(CatalogueDecoder, "decode", counting.decode)
    again = make_builder()
    assert again.build(HISTORIES) == first and counting.clients == 0  # from disk: the LLM never ran
    assert again._backend is None and again.stats()["generated_clients"] == 0
    changed = {**HISTORIES, 2: HISTORIES[2][:-1]}
    views = make_builder().build(changed)
    assert counting.clients == 1  # only the changed client is generated again
    assert views[1] == first[1] and views[3] == first[3]  # another client's change leaves a client's views alone
    make_builder(seed=99).build(HISTORIES)
    assert counting.clients == 4  # a changed seed changes every client's key


def test_interrupted_generation_resumes(make_builder, monkeypatch):
    monkeypatch.setattr(CatalogueDecoder, "decode", CountingDecoder(fail_after=2).decode)  # dies on the second batch
    with pytest.raises(KeyboardInterrupt):
        make_builder().build(HISTORIES)
    resumed = CountingDecoder()
    monkeypatch.setattr(CatalogueDecoder, "decode", resumed.decode)
    views = make_builder().build(HISTORIES)
    assert resumed.clients == 1  # only the unfinished client
    assert views == make_builder(cache="fresh").build(HISTORIES)  # same views as an uninterrupted run


def test_torn_cache_line_is_dropped(make_builder, monkeypatch):
    builder = make_builder()
    views = builder.build(HISTORIES)
    path = builder.cache().path
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:10])  # killed while writing the third client
    resumed = CountingDecoder()
    monkeypatch.setattr(CatalogueDecoder, "decode", resumed.decode)
    assert make_builder().build(HISTORIES) == views and resumed.clients == 1


def test_generation_runs_on_the_cores_other_processes_leave_free(make_builder, monkeypatch):
    assert threads_for_free_cores(2, cores=2, busy_cores=0.2) == 2  # an idle machine: torch's threads
    assert threads_for_free_cores(2, cores=2, busy_cores=0.6) == 2  # a blip is not a busy core
    assert threads_for_free_cores(2, cores=2, busy_cores=1.0) == 1  # beside one busy job
    assert threads_for_free_cores(2, cores=2, busy_cores=2.0) == 1  # at least one
    assert threads_for_free_cores(4, cores=16, busy_cores=3.0) == 4  # never more than torch had
    import psutil
    import torch

    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: 50.0)  # one of two cores busy elsewhere
    monkeypatch.setattr(psutil, "cpu_count", lambda: 2)
    threads_seen = []

    def decode(decoder, *args, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return REAL_DECODE(decoder, *args, **kwargs)

    monkeypatch.setattr(CatalogueDecoder, "decode", decode)
    torch.set_num_threads(2)  # the one_thread fixture restores the suite's count
    views = make_builder().build(HISTORIES)
    assert threads_seen and set(threads_seen) == {1}
    assert torch.get_num_threads() == 2  # restored after generation
    check(views, HISTORIES)


def test_sampling_is_deterministic_per_client(make_builder):
    views = make_builder(cache="a", do_sample=True).build(HISTORIES)
    assert make_builder(cache="b", do_sample=True).build(HISTORIES) == views
    alone = {c: make_builder(cache=f"d{c}", do_sample=True).build({c: h})[c] for c, h in HISTORIES.items()}
    assert alone == views  # a client's views do not depend on who shares its batch


def test_held_out_items_never_reach_the_views(tiny_llm, tmp_path):
    """Two datasets that differ only in some users' validation and test items, through the plugin's own data
    pipeline (the histories the trainer gives the builder): the views are identical."""
    from recbole.data import create_dataset, data_preparation

    from recbole_lumos.quick_start import build_config

    def views(folder, last_items):
        data_path = write_tiny_dataset(str(tmp_path / folder), last_items=last_items)
        config = build_config("LUMOS", "tiny", config_dict=tiny_settings(
            data_path, views="llm", llm_model=tiny_llm, llm_dtype="float32", views_cache_dir=str(tmp_path / folder)))
        train, _, _ = data_preparation(config, create_dataset(config))
        return build_llm_views(config, train._dataset).build(train._dataset.client_histories())

    assert views("a", {3: [5, 6], 7: [9, 10]}) == views("b", {3: [30, 31], 7: [32, 33]})


def test_factory_reads_config_and_plain_prompt_model(tmp_path):
    folder = make_tiny_llm(tmp_path / "plain", chat_template=False)  # no chat template: 'role: text' lines
    config = {"dataset": "tiny", "seed": 1, "llm_model": folder, "llm_dtype": "float32", "MAX_ITEM_LIST_LENGTH": 3,
              "views_cache_dir": str(tmp_path / "views"), "view_negative_items": 2, "view_window_items": 10}
    builder = build_llm_views(config, FakeDataset(config=config))
    check(builder.build({5: [1, 2]}), {5: [1, 2]})
    assert builder.shape.negative_items == 2 and builder.shape.window == 3  # capped by what the model reads
    assert builder.backend.render([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"
    assert list((tmp_path / "views").glob("tiny-llm-*.jsonl"))


def test_dataset_without_item_text_is_a_clear_error():
    from recbole_lumos.errors import LumosError

    with pytest.raises(LumosError, match="needs item text"):
        build_llm_views({"dataset": "ids", "seed": 0}, FakeDataset(with_text=False))


def test_lora_adapter_and_per_client_finetune(tiny_llm, make_builder, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_llm, local_files_only=True)
    get_peft_model(base, LoraConfig(r=2, task_type="CAUSAL_LM")).save_pretrained(adapter)
    builder = make_builder(lora_finetune={"steps": 2, "lr": 1e-2})
    builder.backend_options.update(lora_path=str(adapter))
    histories = {1: HISTORIES[1], 2: HISTORIES[2]}
    check(builder.build(histories), histories)
    assert builder.backend._lora_init is not None  # a fresh LoRA went on top of the merged adapter


def test_ray_workers_give_the_same_views(make_builder):
    ray = pytest.importorskip("ray")
    alone = make_builder(cache="one").build(HISTORIES)
    try:
        fanned = make_builder(cache="two", workers=2, batch_size=1)
        assert fanned.build(HISTORIES) == make_builder(cache="three", batch_size=1).build(HISTORIES)
        assert fanned.build(HISTORIES) == alone  # then read back from its cache
    finally:
        ray.shutdown()


@pytest.mark.skipif(fcntl is None, reason="no POSIX flock on this platform")
def test_runs_sharing_a_cache_file_take_turns(tmp_path):
    """A benchmark's parallel workers append to one cache file: neither writes nor trims inside the other's batch."""
    cache = ViewCache("k" * 64, tmp_path)
    cache.append([{"key": "a", "views": list(range(3000))}])  # a record longer than one write buffer
    with ThreadPoolExecutor(2) as pool, open(cache.path, "ab") as other_run:  # closed (unlocked) before the join
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX)
        other_run.write(b'{"key": "c", "views"')  # the other run is mid-batch
        other_run.flush()
        writing = pool.submit(cache.append, [{"key": "b", "views": list(range(3000))}])
        loading = pool.submit(cache.load)
        for waiting in (writing, loading):
            with pytest.raises(FutureTimeout):
                waiting.result(timeout=1.0)  # both wait for the lock
        other_run.write(b": [1]}\n")
        other_run.flush()
        fcntl.flock(other_run.fileno(), fcntl.LOCK_UN)
        writing.result()
        assert "c" in loading.result()  # the half-written line was not taken for a torn one and trimmed
    assert set(cache.load()) == {"a", "b", "c"}  # every line whole
