"""Catalogue-constrained decoding: the LLM names view items token by token inside a prefix trie of the catalogue's
titles, so every item it names is a catalogue item by construction (no grounding, no fill).

The answer has the labelled-lines shape of the prompt's few-shot example, e.g.
    NEXT: Aliens; Blade Runner
    SIMILAR: Predator
    UNLIKE: Emma; Babe
The labels, separators and section breaks are written for the model; what it chooses are the title tokens, and
where a title ends (a title that is a prefix of another). Items of the user's history and items already named are
excluded by pruning the trie per row (with shortlists, so is every item outside the section's shortlist), and no
two titles of a section may start with the same token (a small LM otherwise copies its last title's first word:
"Mad Love; Mad City; Mad Dog Time"). The cost per client is its own prompt tokens and its answer's title tokens:
    * the shared part of the prompt (system, few-shot example) is encoded once and reused from its KV cache;
    * logits are computed for the allowed tokens only, and only where the model has a choice;
    * a title stops once it names a single catalogue item (``complete_titles=False``, the default);
    * finished rows leave the batch, so short answers do not pay for long ones.
"""
import inspect

import torch
from transformers import DynamicCache


class TitleTrie:
    """Token sequences of item titles -> a trie whose leaves hold items; 'size' counts the items below a node."""

    def __init__(self, token_sequences):
        """token_sequences[item] = token ids of that item's title ([] for items without a title, e.g. padding)."""
        self.children, self.items, self.size = [{}], [[]], [0]
        self.path = {}  # item -> the nodes on its way down, root included
        for item, tokens in enumerate(token_sequences):
            if not tokens:
                continue
            node, path = 0, [0]
            for token in tokens:
                if token not in self.children[node]:
                    self.children.append({})
                    self.items.append([])
                    self.size.append(0)
                    self.children[node][token] = len(self.children) - 1
                node = self.children[node][token]
                path.append(node)
            self.items[node].append(item)
            self.path[item] = path
            for n in path:
                self.size[n] += 1


class _Row:
    """One client's answer being decoded: items asked per section, what it may not name, what it has named.
    shortlists: per section, the only items it may name (None: any catalogue item)."""

    def __init__(self, trie, plan, excluded, generator=None, shortlists=None):
        self.trie, self.plan, self.generator = trie, plan, generator
        self.shortlists = shortlists or [None] * len(plan)
        self.pool = None  # the current section's shortlist, less what is excluded (None: no shortlist)
        self.excluded, self.excluded_below = set(), {}  # a node whose items are all excluded is dead
        for item in excluded:
            self.exclude(item)
        self.named = [[] for _ in plan]
        self.section, self.node, self.forced = 0, 0, []
        self.enter_section()

    def enter_section(self):
        """The items the current section may name: its shortlist's live ones, counted per trie node. First tokens
        are one per title within a section: a NEXT title's first word must not bar a SIMILAR or UNLIKE title
        (the items already named stay excluded by item id)."""
        self.first_tokens = set()  # tokens that started a title of this section
        shortlist = self.shortlists[self.section] if 0 <= self.section < len(self.plan) else None
        self.pool, self.pool_below = None, {}
        if shortlist is not None:
            self.pool = {item for item in shortlist if item not in self.excluded and item in self.trie.path}
            for item in self.pool:
                for node in self.trie.path[item]:
                    self.pool_below[node] = self.pool_below.get(node, 0) + 1

    def exclude(self, item):
        if item in self.excluded:
            return
        self.excluded.add(item)
        for node in self.trie.path.get(item, ()):
            self.excluded_below[node] = self.excluded_below.get(node, 0) + 1
        if self.pool and item in self.pool:
            self.pool.discard(item)
            for node in self.trie.path[item]:
                self.pool_below[node] -= 1

    def live_below(self, node):
        if self.pool is not None:
            return self.pool_below.get(node, 0)
        return self.trie.size[node] - self.excluded_below.get(node, 0)

    def live_children(self, node):
        return [(token, child) for token, child in self.trie.children[node].items() if self.live_below(child)]

    def live_items(self, node):
        return [item for item in self.trie.items[node]
                if item not in self.excluded and (self.pool is None or item in self.pool)]

    def only_item_below(self, node):
        """The single live item below a node with one live item."""
        while not self.live_items(node):
            node = self.live_children(node)[0][1]
        return self.live_items(node)[0]


class CatalogueDecoder:
    """Decodes the views of a batch of clients with a causal LM restricted to catalogue titles."""

    def __init__(self, model, tokenizer, titles, labels, max_title_tokens=16, complete_titles=False):
        """titles[item]: the title the LLM writes for that item ('' = not nameable); labels: the section labels in
        answer order (e.g. NEXT, SIMILAR, UNLIKE); the first is in the prompt, the others are written for the model."""
        self.model, self.tokenizer = model, tokenizer
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        self.trie = TitleTrie([encode(" " + t)[:max_title_tokens] if t else [] for t in titles])
        self.separator = encode(";")
        self.breaks = [encode(f"\n{label}:") for label in labels[1:]]
        self.complete_titles = complete_titles
        self.body = model.get_decoder()
        # transformers >= 5.2x calls the cache argument `cache` and deprecates `past_key_values`
        self.cache_arg = "cache" if "cache" in inspect.signature(self.body.forward).parameters else "past_key_values"
        self.output_weight = model.get_output_embeddings().weight
        self.tokens_processed = 0
        self._prefix = None  # (token ids, per-layer (keys, values)) of the shared prompt prefix

    # ------------------------------------------------------------------------------------------ the shared prefix
    def forget_prefix(self):
        """The model's weights changed (a per-client LoRA): the shared prefix must be encoded again."""
        self._prefix = None

    @torch.no_grad()
    def _prefix_cache(self, prefix_ids):
        if self._prefix is None or self._prefix[0] != prefix_ids:
            ids = torch.tensor([prefix_ids], dtype=torch.long, device=self.output_weight.device)
            cache = DynamicCache()
            self.body(input_ids=ids, use_cache=True, **{self.cache_arg: cache})
            self.tokens_processed += len(prefix_ids)
            self._prefix = (list(prefix_ids), [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix[1]

    # ------------------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, prefix_ids, suffixes, plans, excluded, generators=None, temperature=1.0, shortlists=None):
        """prefix_ids: the prompt tokens all rows share; suffixes: each row's own prompt tokens (history, request,
        the first label); plans: items per section per row; excluded: item sets a row may not name (its history);
        generators: per-row torch.Generator to sample (None: greedy); shortlists: per row, per section, the items
        it may name (None: the whole catalogue). Returns per row [[items] per section]."""
        device = self.output_weight.device
        rows = [_Row(self.trie, plan, ex, g, short) for plan, ex, g, short in
                zip(plans, excluded, generators or [None] * len(plans), shortlists or [None] * len(plans))]
        for row in rows:
            if not row.plan[0]:  # nothing asked in the first section: go straight to the next label
                row.section = -1
                row.forced = self._next_section(row)
        batch, width, start = len(rows), max(map(len, suffixes)), len(prefix_ids)
        cache = DynamicCache()
        if prefix_ids:  # every row starts from the shared prefix's keys and values
            cache = DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                                 for k, v in self._prefix_cache(prefix_ids)])
        # the shared prefix, then each row's suffix left-padded: [prefix][pad..][suffix]
        ids = torch.full((batch, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(batch, start + width, dtype=torch.long)
        mask[:, :start] = 1
        positions = torch.full((batch, width), start, dtype=torch.long)
        for r, suffix in enumerate(suffixes):
            ids[r, width - len(suffix):] = torch.tensor(suffix)
            mask[r, start + width - len(suffix):] = 1
            positions[r, width - len(suffix):] = torch.arange(start, start + len(suffix))
        hidden = self.body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           use_cache=True, **{self.cache_arg: cache}).last_hidden_state[:, -1]
        self.tokens_processed += sum(map(len, suffixes))
        next_position = positions[:, -1] + 1
        active = list(range(batch))
        while True:
            tokens, keep = [], []
            for index, r in enumerate(active):
                token = self._next_token(rows[r], hidden[index], temperature)
                if token is not None:
                    tokens.append(token)
                    keep.append(index)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch (and the KV cache)
                cache.batch_select_indices(torch.tensor(keep, device=device))
                mask, next_position = mask[keep], next_position[keep]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], dim=1)
            hidden = self.body(input_ids=torch.tensor(tokens, device=device).view(-1, 1),
                               attention_mask=mask.to(device), position_ids=next_position.view(-1, 1).to(device),
                               use_cache=True, **{self.cache_arg: cache}).last_hidden_state[:, -1]
            self.tokens_processed += len(active)
            next_position = next_position + 1
        return [row.named for row in rows]

    # ------------------------------------------------------------------------------------------ one row, one step
    def _next_section(self, row):
        """Closes the row's section: the tokens opening the next non-empty one, or [] when the answer is complete."""
        row.section += 1
        tokens = []
        while row.section < len(row.plan):
            if row.section > 0:
                tokens += self.breaks[row.section - 1]
            if row.plan[row.section] > 0:
                row.enter_section()
                return tokens
            row.section += 1
        return []

    def _after_item(self, row, item):
        """Records a named item; the tokens that follow it (separator or next label), [] when the answer is done."""
        row.named[row.section].append(item)
        row.exclude(item)
        row.node = 0
        if len(row.named[row.section]) < row.plan[row.section]:
            return list(self.separator)
        return self._next_section(row)

    def _end_token(self, row):
        """The token that ends the current title: the separator's, the next label's, or end of text."""
        if len(row.named[row.section]) + 1 < row.plan[row.section]:
            return self.separator[0]
        return self.breaks[row.section][0] if row.section + 1 < len(row.plan) else self.tokenizer.eos_token_id

    def _choose(self, hidden, candidates, generator, temperature):
        logits = self.output_weight[candidates] @ hidden  # only the allowed tokens' logits
        if generator is None:
            return candidates[int(logits.argmax())]
        probs = torch.softmax(logits.float().cpu() / temperature, dim=0)
        return candidates[int(torch.multinomial(probs, 1, generator=generator))]

    def _next_token(self, row, hidden, temperature=1.0):
        """The token to feed for this row next, or None when its answer is complete."""
        if row.forced:
            return row.forced.pop(0)
        if row.section >= len(row.plan):
            return None
        node = row.node
        children, ends = row.live_children(node), row.live_items(node)
        if not children and not ends:  # nothing left this section may name: on to the next one
            row.node = 0
            row.forced = self._next_section(row)
            return row.forced.pop(0) if row.forced else None
        if node and not self.complete_titles and row.live_below(node) == 1:
            row.forced = self._after_item(row, row.only_item_below(node))
        elif not children:
            row.forced = self._after_item(row, ends[0])
        else:
            end_token = self._end_token(row)
            if node == 0:  # a small LM copies its last title's first word ("Mad Love; Mad City"): one per section
                children = [c for c in children if c[0] not in row.first_tokens] or children
            candidates = [token for token, _ in children] + ([end_token] if ends else [])
            choice = self._choose(hidden, candidates, row.generator, temperature)
            if ends and choice == end_token:
                row.forced = self._after_item(row, ends[0])
            else:
                if node == 0:
                    row.first_tokens.add(choice)
                row.node = dict(children)[choice]
                return choice
        return row.forced.pop(0) if row.forced else None
