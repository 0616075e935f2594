"""LUMOS views from an on-device LLM: every view item is chosen by the LLM, and is a catalogue item by construction.

Per client: one prompt (its recent training items as quoted lines, the few-shot example before them) -> the LLM
writes NEXT / SIMILAR / UNLIKE lines whose titles are decoded inside a trie of the catalogue's titles
(``catalogue_decoding``) -> F, P, N placed where the model reads them (``place_views``). With ``llm_shortlist: K``
the LLM chooses NEXT and SIMILAR among the K items nearest the history in the sentence-embedding space (the
embedding views' recency-weighted centroid) and UNLIKE among the K farthest: the space brings the taste a small LM
lacks (benchmarks/view_quality.py), the LLM still names every item. Records go to an on-disk
cache keyed per client, so reruns are free, interrupted runs resume and one changed history regenerates one client.
Batches run in this process or, with ``workers`` > 1 or a ``ray_address``, on Ray workers holding one LLM each.
"""
import time
from contextlib import nullcontext
from logging import getLogger

import numpy as np
import torch
from tqdm.auto import tqdm

from recbole_lumos.augment.base import ViewBuilder, ViewShape, place_views
from recbole_lumos.augment.cache import ViewCache, cache_key
from recbole_lumos.augment.catalogue import catalogue_from_dataset
from recbole_lumos.augment.catalogue_decoding import CatalogueDecoder
from recbole_lumos.augment.embedding_views import client_seed, require_text, view_shape
from recbole_lumos.augment.item_space import ItemSpace, LazyEncoder
from recbole_lumos.augment.llm_backend import LLMBackend, choose_dtype, threads_on_free_cores, weights_digest
from recbole_lumos.augment.prompts import PromptBook, answer_title
from recbole_lumos.augment.settings import setting, view_seed

VIEWS = ("future", "rephrase", "counterfactual")


class LLMViewBuilder(ViewBuilder):
    name = "llm"

    def __init__(self, catalogue, backend_options=None, prompts=None, shape=None, batch_size=32,
                 max_title_tokens=16, complete_titles=False, do_sample=False, temperature=0.7, lora_finetune=None,
                 seed=0, cache_dir=None, dataset_name="", workers=1, ray_address=None, shortlist=0, encoder=None,
                 recency_decay=0.9):
        """backend_options: LLMBackend's keyword arguments; lora_finetune: None or {steps, lr} to fine-tune a
        fresh LoRA on each client's own prompt first; workers/ray_address: fan batches out on Ray; shortlist: K
        items per section from the sentence-embedding space (encoder, recency_decay), 0 = the whole catalogue."""
        require_text(catalogue, "llm", dataset_name)
        self.catalogue, self.seed, self.shape = catalogue, seed, shape or ViewShape()
        self.backend_options = dict(backend_options or {})
        self.prompts = prompts or PromptBook()
        self.batch_size, self.workers, self.ray_address = batch_size, workers, ray_address
        self.decoding = dict(max_title_tokens=max_title_tokens, complete_titles=complete_titles)
        self.do_sample, self.temperature = do_sample, temperature
        self.lora_finetune, self.cache_dir, self.dataset_name = lora_finetune, cache_dir, dataset_name
        self.shortlist, self.encoder, self.recency_decay = shortlist, encoder, recency_decay
        self._space = None
        self._backend = self._decoder = self._prompt = None
        self._stats = {}

    def __getstate__(self):  # sent to Ray workers without the loaded model: each loads its own
        return {**self.__dict__, "_backend": None, "_decoder": None, "_prompt": None, "_space": None}

    # Heavy parts load on first use: a fully cached run never loads the LLM.
    @property
    def backend(self):
        if self._backend is None:
            self._backend = LLMBackend(**self.backend_options)
        return self._backend

    @property
    def decoder(self):
        if self._decoder is None:
            titles = [answer_title(title) for title in self.catalogue.titles]
            self._decoder = CatalogueDecoder(self.backend.model, self.backend.tokenizer, titles,
                                             list(self.prompts.labels), **self.decoding)
        return self._decoder

    def prompt(self):
        """(shared prefix token ids, a function rendering the rest of a client's prompt)."""
        if self._prompt is None:
            prefix, rest = self.prompts.split(self.backend.render)
            self._prompt = (self.backend.encode(prefix), rest)
        return self._prompt

    def resolve_dtype(self):
        """llm_dtype auto -> the dtype this machine runs fastest, decided once here: it shapes the views (the cache
        key holds it) and every Ray worker must use the same one."""
        if self.backend_options.get("dtype", "auto") == "auto":
            device = torch.device(self.backend_options.get("device") or "cpu")
            self.backend_options["dtype"], why = choose_dtype("auto", device)
            getLogger().info(f"llm_dtype auto -> {self.backend_options['dtype']}: {why}")

    def cache(self):
        self.resolve_dtype()
        # max_len is not in the key: it places the named items (``place``), it does not change what the LLM names
        shape = {key: value for key, value in vars(self.shape).items() if key != "max_len"}
        settings = dict(self.backend_options, **self.decoding, shape=shape, do_sample=self.do_sample,
                        temperature=self.temperature, lora_finetune=self.lora_finetune)
        if self.shortlist:  # keys of the views made before shortlists existed stay as they were
            settings.update(shortlist=self.shortlist, recency_decay=self.recency_decay,
                            encoder=str(getattr(self.encoder, "path", None) or "all-MiniLM-L6-v2"))
        for where in ("device", "cache_dir"):  # where it runs does not change the views
            settings.pop(where, None)
        settings["first_tokens"] = "per section"  # views decoded before that fix named other items: not reused
        weights = weights_digest(self.backend_options.get("model"), self.backend_options.get("cache_dir"))
        key = cache_key(dataset=self.dataset_name, prompts=self.prompts.text, settings=settings, seed=self.seed,
                        weights=weights,
                        catalogue=self.catalogue.texts)
        return ViewCache(key, self.cache_dir, name=f"{self.dataset_name or 'views'}-llm")

    # ------------------------------------------------------------------------------------------ all clients
    def build(self, histories):
        histories = {client: [int(i) for i in items] for client, items in histories.items()}
        cache = self.cache()
        records = cache.load()
        keys = {str(client): cache.client_key(client, history) for client, history in histories.items()}
        todo = [client for client in histories if keys[str(client)] not in records]
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        start, tokens = time.perf_counter(), 0
        here_on_cpu = not self.on_ray and (self.backend_options.get("device") or "cpu") == "cpu"  # Ray sets its own
        with threads_on_free_cores(getLogger()) if todo and here_on_cpu else nullcontext(), \
                tqdm(total=len(histories), initial=len(histories) - len(todo), unit="client", desc="LLM views",
                     disable=not todo) as bar:
            for new, batch_tokens in self._run(batches, histories):
                for record in new:
                    record["key"] = keys[record["client"]]
                cache.append(new)
                records.update((record["key"], record) for record in new)
                tokens += batch_tokens
                bar.update(len(new))
        mine = [records[keys[str(client)]] for client in histories]
        self._stats = self._summary(mine, len(todo), tokens, time.perf_counter() - start)
        return {client: self.place(client, histories[client], record["named"])
                for client, record in zip(histories, mine)}

    def place(self, client, history, named):
        """A client's views from the items its LLM named ({view: items}), placed on the anchor the model reads. Done
        on every build, so views cached under another window (MAX_ITEM_LIST_LENGTH) are placed for this one."""
        return place_views(history, named["future"], named["rephrase"], named["counterfactual"], self.shape.window,
                           np.random.default_rng(client_seed(self.seed, client)), self.shape.max_len)

    def _run(self, batches, histories):
        """(records, tokens processed) of each batch, as they finish: here, or on Ray workers."""
        if self.on_ray:
            from recbole_lumos.augment.ray_workers import generate_on_ray

            yield from generate_on_ray(self, batches, histories)
            return
        for batch in batches:
            yield self.generate({client: histories[client] for client in batch})

    @property
    def on_ray(self):
        return self.workers > 1 or bool(self.ray_address)

    def _summary(self, records, generated, tokens, seconds):
        stats = {"clients": len(records), "generated_clients": generated, "seconds": round(seconds, 1),
                 "clients_per_s": round(generated / max(seconds, 1e-9), 2), "tokens_processed": tokens,
                 "tokens_per_client": round(tokens / max(generated, 1), 1),
                 "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
        for view in VIEWS:
            asked = sum(r["asked"][view] for r in records)
            named = [item for r in records for item in r["named"][view]]
            stats[f"{view}_llm_share"] = round(len(named) / max(asked, 1), 4)
            stats[f"{view}_distinct_items"] = len(set(named))
        return stats

    def stats(self):
        return dict(self._stats)

    # ------------------------------------------------------------------------------------------ one batch
    def generate(self, batch):
        """The views of one batch of clients ({client: history}) in this process -> (cache records, tokens)."""
        prefix_ids, rest = self.prompt()
        texts, titles = self.catalogue.texts, self.catalogue.titles
        views_of_section = list(self.prompts.labels.values())
        suffixes, plans, asked = [], [], []
        for history in batch.values():
            n_future, n_similar, n_negative = self.shape.counts(len(history))
            shown = [(texts[i], titles[i]) for i in history[-self.shape.window:]]
            suffixes.append(self.backend.encode(rest(shown, n_future, n_similar, n_negative)))
            counts = dict(zip(VIEWS, (n_future, n_similar, n_negative)))
            plans.append([counts[view] for view in views_of_section])
            asked.append(counts)
        seeds = [client_seed(self.seed, client) for client in batch]
        generators = [torch.Generator().manual_seed(s) for s in seeds] if self.do_sample else [None] * len(seeds)
        excluded = [set(history) for history in batch.values()]
        shortlists = [self.shortlists(history, views_of_section)
                      for history in batch.values()] if self.shortlist else None
        before = self.decoder.tokens_processed
        if self.lora_finetune:  # one adapter per client: no batching
            named = []
            for row, (suffix, plan, ex, g) in enumerate(zip(suffixes, plans, excluded, generators)):
                self.backend.finetune(self.backend.tokenizer.decode(suffix), seed=seeds[row],
                                      **self.lora_finetune)
                self.decoder.forget_prefix()  # the weights changed: the shared prefix is encoded anew
                named += self.decoder.decode(prefix_ids, [suffix], [plan], [ex], [g], self.temperature,
                                             [shortlists[row]] if shortlists else None)
        else:
            named = self.decoder.decode(prefix_ids, suffixes, plans, excluded, generators, self.temperature, shortlists)
        records = []
        for (client, history), sections, counts in zip(batch.items(), named, asked):
            by_view = dict(zip(views_of_section, sections))
            views = self.place(client, history, by_view)
            records.append({"client": str(client), **{v: getattr(views, v) for v in VIEWS}, "named": by_view,
                            "asked": counts})
        return records, self.decoder.tokens_processed - before

    def shortlists(self, history, views_of_section):
        """Per answer section, the items it may name: the ``shortlist`` nearest the history's centroid in the
        sentence-embedding space (F, P), or the farthest (N); never a history item."""
        if self._space is None:
            self._space = ItemSpace.from_texts(self.catalogue.texts, self.encoder or LazyEncoder())
        centroid = self._space.centroid(list(history), self.recency_decay)
        near = self._space.ranked(centroid, set(history), self.shortlist)
        far = self._space.ranked(centroid, set(history), self.shortlist, farthest=True)
        return [far if view == "counterfactual" else near for view in views_of_section]


def build_llm_views(config, dataset):
    catalogue = catalogue_from_dataset(dataset)  # the builder refuses a catalogue without text
    backend = {key: setting(config, f"llm_{key}") for key in ("model", "dtype", "int8", "lora_path", "lora_rank")}
    backend.update(device=setting(config, "llm_device"), cache_dir=setting(config, "llm_model_cache_dir"))
    finetune = None
    if setting(config, "llm_lora_finetune"):
        finetune = {"steps": setting(config, "llm_lora_steps"), "lr": setting(config, "llm_lora_lr")}
    return LLMViewBuilder(
        catalogue, backend, PromptBook(setting(config, "llm_prompts")), view_shape(config),
        batch_size=setting(config, "llm_batch_size"), max_title_tokens=setting(config, "llm_max_title_tokens"),
        complete_titles=setting(config, "llm_complete_titles"), do_sample=setting(config, "llm_do_sample"),
        temperature=setting(config, "llm_temperature"), lora_finetune=finetune, seed=view_seed(config),
        cache_dir=setting(config, "views_cache_dir"), dataset_name=config["dataset"] or "",
        workers=setting(config, "llm_workers"), ray_address=setting(config, "ray_address"),
        shortlist=setting(config, "llm_shortlist"), recency_decay=setting(config, "view_recency_decay"),
        encoder=LazyEncoder(setting(config, "embedding_model"), setting(config, "llm_device")))
