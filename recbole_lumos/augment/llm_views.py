"""LUMOS views from an on-device LLM: prompt with the client's own training history, ground the answer to items.

Per client: one prompt (recent history as quoted item lines) -> one answer with NEXT / SIMILAR / UNLIKE lines ->
titles grounded to catalogue ids -> F, P, N assembled in the item space, which also fills whatever the LLM did not
deliver (counted). Results go to an on-disk cache keyed by every input, so reruns are free and crashes resume.
"""
import time

import numpy as np
from tqdm.auto import tqdm

from recbole_lumos.augment.base import ClientViews, ViewBuilder
from recbole_lumos.augment.cache import ViewCache, cache_key
from recbole_lumos.augment.catalogue import catalogue_from_dataset
from recbole_lumos.augment.embedding_views import assemble_views, client_seed, view_options
from recbole_lumos.augment.grounding import Grounder
from recbole_lumos.augment.item_space import ItemSpace, LazyEncoder
from recbole_lumos.augment.llm_backend import LLMBackend
from recbole_lumos.augment.prompts import PromptBook
from recbole_lumos.augment.settings import setting, view_seed
from recbole_lumos.errors import LumosError

VIEWS = ("future", "rephrase", "counterfactual")
COUNTS = ("grounded", "filled", "similarity_sum", "rejected", "parse_failures")


class LLMViewBuilder(ViewBuilder):
    name = "llm"

    def __init__(self, catalogue, backend_options=None, prompts=None, encoder=None, grounding_threshold=0.65,
                 batch_size=32, max_history_items=10, items_per_view=5, lora_finetune=None, seed=0,
                 cache_dir=None, dataset_name="", **options):
        """backend_options: LLMBackend's keyword arguments; lora_finetune: None or {steps, lr} to fine-tune a
        fresh LoRA per client; options: the view shape (see assemble_views)."""
        self.catalogue, self.encoder, self.seed = catalogue, encoder, seed
        self.backend_options = dict(backend_options or {})
        self.prompts = prompts or PromptBook()
        self.threshold, self.batch_size = grounding_threshold, batch_size
        self.max_history_items, self.items_per_view = max_history_items, items_per_view
        self.lora_finetune, self.cache_dir, self.dataset_name = lora_finetune, cache_dir, dataset_name
        self.options = options
        self._backend = self._space = self._grounder = None
        self._stats = {}

    # Heavy parts load on first use: a fully cached run never loads the LLM.
    @property
    def backend(self):
        if self._backend is None:
            self._backend = LLMBackend(**self.backend_options)
        return self._backend

    def _ground_tools(self):
        if self._grounder is None:
            encoder = self.encoder or LazyEncoder()
            self._space = ItemSpace.from_texts(self.catalogue.texts, encoder)
            self._grounder = Grounder(self.catalogue, encoder, self.threshold)
        return self._space, self._grounder

    def cache_for(self, histories):
        settings = dict(self.backend_options, **self.options, threshold=self.threshold,
                        max_history_items=self.max_history_items, items_per_view=self.items_per_view,
                        lora_finetune=self.lora_finetune)
        key = cache_key(dataset=self.dataset_name, prompts=self.prompts.text, settings=settings, seed=self.seed,
                        catalogue=self.catalogue.texts, histories=[(str(c), h) for c, h in histories.items()])
        return ViewCache(key, self.cache_dir, name=f"{self.dataset_name or 'views'}-llm")

    def build(self, histories):
        histories = {client: [int(i) for i in items] for client, items in histories.items()}
        cache = self.cache_for(histories)
        records, complete = cache.load()
        todo = [client for client in histories if str(client) not in records]
        start, counters = time.perf_counter(), self._counters()
        clients = list(histories)  # fixed batches: a resumed run pads every batch exactly as the first run did
        with tqdm(total=len(clients), initial=len(clients) - len(todo), unit="client", desc="LLM views",
                  disable=not todo) as bar:
            for i in range(0, len(clients), self.batch_size):
                batch = [client for client in clients[i:i + self.batch_size] if str(client) not in records]
                if batch:
                    new = self._generate({client: histories[client] for client in batch})
                    cache.append(new)
                    records.update((r["client"], r) for r in new)
                    bar.update(len(new))
        if not complete:
            cache.finish(len(clients))
        mine = [records[str(client)] for client in clients]
        self._stats = self._summary(mine, len(todo), time.perf_counter() - start, counters)
        return {client: ClientViews(*(record[v] for v in VIEWS)) for client, record in zip(clients, mine)}

    def _summary(self, records, generated, seconds, counters):
        tokens, gen_seconds = (now - before for now, before in zip(self._counters(), counters))
        totals = {k: sum(r[k] for r in records) for k in COUNTS}
        items = totals["grounded"] + totals["filled"]
        return {"clients": len(records), "cached_clients": len(records) - generated, "generated_clients": generated,
                "view_items_grounded": totals["grounded"], "view_items_filled": totals["filled"],
                "grounded_share": totals["grounded"] / max(items, 1),
                "mean_similarity": totals["similarity_sum"] / max(totals["grounded"], 1),
                "candidates_rejected": totals["rejected"], "parse_failures": totals["parse_failures"],
                "tokens_generated": tokens, "tokens_per_s": tokens / max(gen_seconds, 1e-9),
                "clients_per_s": generated / max(seconds, 1e-9), "seconds": seconds}

    def stats(self):
        return dict(self._stats)

    def _counters(self):
        """Tokens generated and seconds spent so far by the backend (its lifetime, across builds)."""
        return (self._backend.tokens_generated, self._backend.generation_seconds) if self._backend else (0, 0.0)

    def _answer(self, conversations, seeds, limits):
        shaper = self.prompts.shaper(self.backend.tokenizer, limits)
        return self.backend.generate(conversations, seeds, self.prompts.prefix, [shaper])

    def _generate(self, batch):
        """Prompt, generate, ground and assemble the views of one batch of clients -> cache records."""
        texts, titles = self.catalogue.texts, self.catalogue.titles
        n_future = min(self.items_per_view, self.options["future_items"])
        n_negative = min(self.items_per_view, self.options["negative_items"])
        conversations, seeds, limits = [], [], []
        for client, history in batch.items():
            n_similar = max(1, min(self.items_per_view, round(self.options["swap_ratio"] * len(history))))
            shown = [(texts[i], titles[i]) for i in history[-self.max_history_items:]]
            conversations.append(self.prompts.messages(shown, n_future, n_similar, n_negative))
            seeds.append(client_seed(self.seed, client))
            asked = {"future": n_future, "rephrase": n_similar, "counterfactual": n_negative}
            limits.append([asked[view] for view in self.prompts.labels.values()])
        answers = []
        if self.lora_finetune:  # one adapter per client: no batching
            for conversation, seed, limit in zip(conversations, seeds, limits):
                self.backend.finetune(conversation[-1]["content"], seed=seed, **self.lora_finetune)
                answers += self._answer([conversation], [seed], [limit])
        else:
            answers = self._answer(conversations, seeds, limits)

        space, grounder = self._ground_tools()
        parsed = [self.prompts.parse(answer) for answer in answers]
        grounder.ground([c for found in parsed for names in found.values() for c in names])  # one encoder batch
        records = []
        for (client, history), answer, found, seed in zip(batch.items(), answers, parsed, seeds):
            suggested = {view: [g for g in grounder.ground(names) if g] for view, names in found.items()}
            views, counts = assemble_views(space, history, np.random.default_rng(seed), suggested=suggested,
                                           **self.options)
            counts["rejected"] = sum(len(found[v]) - len(suggested[v]) for v in found)
            counts["parse_failures"] = sum(not found.get(v) for v in VIEWS)
            records.append({"client": str(client), **{v: getattr(views, v) for v in VIEWS}, **counts, "answer": answer})
        return records


def build_llm_views(config, dataset):
    catalogue = catalogue_from_dataset(dataset)
    if not any(catalogue.texts or []):
        raise LumosError(f"views=llm needs item text, and dataset {config['dataset']} has none: set "
                         "item_title_field, or use views=embedding")
    device = setting(config, "llm_device")
    backend = {key: setting(config, f"llm_{key}") for key in (
        "model", "dtype", "max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty",
        "no_repeat_ngram_size", "lora_path", "lora_rank")}
    backend.update(device=device, cache_dir=setting(config, "llm_model_cache_dir"))
    finetune = None
    if setting(config, "llm_lora_finetune"):
        finetune = {"steps": setting(config, "llm_lora_steps"), "lr": setting(config, "llm_lora_lr")}
    return LLMViewBuilder(
        catalogue, backend, PromptBook(setting(config, "llm_prompts")),
        encoder=LazyEncoder(setting(config, "embedding_model"), device),
        grounding_threshold=setting(config, "grounding_threshold"), batch_size=setting(config, "llm_batch_size"),
        max_history_items=setting(config, "llm_max_history_items"),
        items_per_view=setting(config, "llm_items_per_view"), lora_finetune=finetune, seed=view_seed(config),
        cache_dir=setting(config, "views_cache_dir"), dataset_name=config["dataset"] or "", **view_options(config))
