"""The LLM view builder end to end, on a tiny Llama built on the spot (same loading and generation path as SmolLM2):
grounding of scripted answers, garbage, the on-disk cache (reuse, new key, resume), determinism, held-out items."""
import pytest
import torch
from conftest_tiny_llm import HISTORIES, FakeDataset, check, make_tiny_llm, tiny_catalogue

from recbole_lumos.augment.embedding_views import EmbeddingViewBuilder, view_options
from recbole_lumos.augment.item_space import load_encoder
from recbole_lumos.augment.llm_backend import LLMBackend
from recbole_lumos.augment.llm_views import LLMViewBuilder, build_llm_views


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from threads, and suffers badly from them on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture
def make_builder(tiny_llm, tmp_path):
    def make(cache="cache", catalogue=None, **overrides):
        backend = dict(model=tiny_llm, dtype="float32", max_new_tokens=48, no_repeat_ngram_size=3,
                       repetition_penalty=1.2)
        backend.update({k: overrides.pop(k) for k in list(overrides) if k in ("model", "do_sample")})
        options = {**view_options(None), "future_items": 3, "negative_items": 4, **overrides.pop("options", {})}
        return LLMViewBuilder(catalogue or tiny_catalogue(), backend, encoder=load_encoder(), batch_size=2,
                              cache_dir=tmp_path / cache, dataset_name="tiny", **{**options, **overrides})
    return make


class Scripted:
    """Stands in for LLMBackend.generate: canned answers, and a count of the clients it was asked about."""

    def __init__(self, answer="", fail_after=None):
        self.answer, self.fail_after, self.clients = answer, fail_after, 0

    def __call__(self, backend, conversations, seeds, prefix="", processors=()):
        if self.fail_after is not None and self.clients >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.clients += len(conversations)
        return [self.answer] * len(conversations)


def test_tiny_llm_end_to_end(make_builder):
    builder = make_builder()
    views = builder.build(HISTORIES)
    check(views, HISTORIES)
    stats = builder.stats()
    assert stats["generated_clients"] == 3 and stats["tokens_generated"] > 0 and stats["tokens_per_s"] > 0
    assert stats["view_items_grounded"] + stats["view_items_filled"] > 0 and stats["clients_per_s"] > 0


def test_noise_is_forced_into_the_labelled_shape(make_builder):
    """The tiny LM emits noise; the AnswerShaper still writes every label, in order, and ends each answer."""
    builder = make_builder(items_per_view=1)
    builder.backend_options["max_new_tokens"] = 64  # > 3 sections x 10 tokens per asked item + labels
    builder.build(HISTORIES)
    for record in builder.cache_for(HISTORIES).load()[0].values():
        answer = record["answer"]
        assert answer.startswith("NEXT:") and 0 < answer.index("\nSIMILAR:") < answer.index("\nUNLIKE:")
    assert builder.stats()["tokens_generated"] < 3 * 64


def test_scripted_answer_is_grounded(make_builder, monkeypatch):
    answer = "NEXT: Aliens; Blade Runner (1982); Star Wars\nSIMILAR: Return of the Jedi\nUNLIKE: Emma; Babe; Alien"
    monkeypatch.setattr(LLMBackend, "generate", Scripted(answer))
    builder = make_builder()
    views = builder.build({1: [3, 6, 8]})[1]
    assert views.future[3:5] == [7, 10]  # Aliens, Blade Runner; Star Wars is history, so filled instead
    assert 5 in views.rephrase  # Return of the Jedi swapped in for one item
    assert views.counterfactual[:2] == [16, 14]  # Emma, Babe; Alien is history
    stats = builder.stats()
    assert stats["view_items_grounded"] == 5 and stats["parse_failures"] == 0 and stats["mean_similarity"] == 1.0


@pytest.mark.parametrize("garbage", ["", "\x00\x01 <|im_end|> ;;;", "NEXT: ;;;\nUNLIKE:", "lorem ipsum " * 500])
def test_garbage_output_is_filled_and_counted(make_builder, monkeypatch, garbage):
    monkeypatch.setattr(LLMBackend, "generate", Scripted(garbage))
    builder = make_builder()
    views = builder.build(HISTORIES)
    check(views, HISTORIES)
    assert all(len(v.future) == len(HISTORIES[c]) + 3 and len(v.counterfactual) == 4 for c, v in views.items())
    stats = builder.stats()
    assert stats["view_items_grounded"] == 0 and stats["grounded_share"] == 0.0
    assert stats["parse_failures"] == 3 * len(HISTORIES)  # three views per client, none usable


def test_cache_is_reused_and_keyed(make_builder, monkeypatch):
    first = make_builder().build(HISTORIES)
    scripted = Scripted()
    monkeypatch.setattr(LLMBackend, "generate", scripted)
    again = make_builder()
    assert again.build(HISTORIES) == first and scripted.clients == 0  # from disk: the LLM never ran
    assert again._backend is None and again.stats()["cached_clients"] == 3
    changed = {**HISTORIES, 2: HISTORIES[2][:-1]}
    make_builder().build(changed)
    assert scripted.clients == 3  # a changed history is a new key: regenerated
    make_builder(seed=99).build(HISTORIES)
    assert scripted.clients == 6  # so is a changed seed


def test_interrupted_generation_resumes(make_builder, monkeypatch):
    answer = "NEXT: Aliens\nSIMILAR: Emma\nUNLIKE: Babe"
    monkeypatch.setattr(LLMBackend, "generate", Scripted(answer, fail_after=2))  # dies on the second batch
    with pytest.raises(KeyboardInterrupt):
        make_builder().build(HISTORIES)
    resumed = Scripted(answer)
    monkeypatch.setattr(LLMBackend, "generate", resumed)
    builder = make_builder()
    views = builder.build(HISTORIES)
    assert resumed.clients == 1 and builder.stats()["cached_clients"] == 2  # only the unfinished client
    monkeypatch.setattr(LLMBackend, "generate", Scripted(answer))
    assert views == make_builder(cache="fresh").build(HISTORIES)  # same views as an uninterrupted run


def test_torn_cache_line_is_dropped(make_builder, monkeypatch):
    answer = "NEXT: Aliens\nSIMILAR: Emma\nUNLIKE: Babe"
    monkeypatch.setattr(LLMBackend, "generate", Scripted(answer))
    builder = make_builder()
    views = builder.build(HISTORIES)
    path = builder.cache_for(HISTORIES).path
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:10])  # killed while writing the third client: no end marker
    resumed = Scripted(answer)
    monkeypatch.setattr(LLMBackend, "generate", resumed)
    assert make_builder().build(HISTORIES) == views and resumed.clients == 1
    assert path.read_text().splitlines()[-1] == '{"done": true, "clients": 3}'


def test_sampling_is_deterministic_per_client(make_builder):
    views = make_builder(cache="a", do_sample=True).build(HISTORIES)
    assert make_builder(cache="b", do_sample=True).build(HISTORIES) == views
    alone = {c: make_builder(cache=f"d{c}", do_sample=True).build({c: h})[c] for c, h in HISTORIES.items()}
    assert alone == views  # a client's views do not depend on who shares its batch


def test_views_ignore_held_out_items(make_builder):
    """Training histories are the full sequences minus the last two items (validation, test): changing a user's
    test item changes nothing the builders see, so nothing they return."""
    full = {1: [3, 6, 8, 7, 9], 2: [11, 12, 13, 1, 14, 20, 21]}
    other = {**full, 2: full[2][:-1] + [24]}  # another held-out test item
    train = lambda seqs: {u: s[:-2] for u, s in seqs.items()}  # noqa: E731
    assert make_builder(cache="x").build(train(full)) == make_builder(cache="y").build(train(other))
    textless = tiny_catalogue()
    textless.texts = [""] * len(textless.texts)  # co-occurrence space: built from the given histories only
    assert EmbeddingViewBuilder(textless).build(train(full)) == EmbeddingViewBuilder(textless).build(train(other))


def test_factory_and_plain_prompt_model(tmp_path):
    folder = make_tiny_llm(tmp_path / "plain", chat_template=False)  # no chat template: 'role: text' lines
    config = {"dataset": "tiny", "seed": 1, "llm_model": folder, "llm_dtype": "float32", "llm_max_new_tokens": 16,
              "views_cache_dir": str(tmp_path / "views"), "view_negative_items": 2}
    builder = build_llm_views(config, FakeDataset(config=config))
    check(builder.build({5: [1, 2]}), {5: [1, 2]})
    assert builder.options["negative_items"] == 2
    assert builder.backend.render([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"
    assert list((tmp_path / "views").glob("tiny-llm-*.jsonl"))


def test_lora_adapter_and_per_client_finetune(tiny_llm, make_builder, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_llm, local_files_only=True)
    get_peft_model(base, LoraConfig(r=2, task_type="CAUSAL_LM")).save_pretrained(adapter)
    builder = make_builder(lora_finetune={"steps": 2, "lr": 1e-2})
    builder.backend_options.update(lora_path=str(adapter), max_new_tokens=12)
    histories = {1: HISTORIES[1], 2: HISTORIES[2]}
    check(builder.build(histories), histories)
    assert builder.backend._lora_init is not None  # a fresh LoRA went on top of the merged adapter

