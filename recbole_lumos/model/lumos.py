"""LUMOS: a SASRec backbone with a projection head and a tri-view contrastive loss.

    L = L_rec + tri_weight * L_tri (+ future_weight * L_future)
  L_rec: next-item cross-entropy;
  L_tri = - sum_{v in F, P} log( e^{s(h,h_v)} / (e^{s(h,h_v)} + e^{s(h,h_N)} + sum_j e^{s(h,h_j)}) ),
          s(a, b) = cos(a, b) / tau on projected last-position states of the user's training history (h) and of
          its views; the h_j are random-item sequences (``tri_extra_negatives``), never another user's data;
          with ``tri_anchor: prefix`` h reads a random prefix of the history instead (drawn each step), so that the
          loss does not train the one sequence that validation reads (the whole training history) and no other;
          ``aligned_prefix`` moves the views onto that prefix too (augment/prefix_views.py, the federated side);
          with ``tri_anchor_gradient: False`` h is held fixed in L_tri (stop-gradient): L_tri moves the views'
          states towards the query's, not the query's towards the views'; ``tri_view_gradient: False`` the converse
          (the views' and negatives' states held fixed, h alone moved);
  L_future (optional, ``future_weight``; 0 = the method as this package defines it, see the README's method
          section): next-item cross-entropy of the items the generator appended in F (its predicted continuation),
          read off F's states that L_tri encodes anyway: the continuation as extra training targets, where a sparse
          history has few of its own.
``calculate_loss`` is this objective on a RecBole batch, so RecBole's own ``Trainer`` trains LUMOS; ``client_loss``
is the same objective on one client's data (every position of its history), which the federated client side
trains. The model knows nothing of clients, rounds or which parameters stay private (see ``federated/``).
Items are scored with the backbone alone (SASRec's ``full_sort_predict``), so RecBole's evaluator serves it.
"""
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_lumos.augment.base import appended_count
from recbole_lumos.augment.settings import setting
from recbole_lumos.errors import LumosError
from recbole_lumos.model.sequences import random_negatives, random_prefixes, right_pad, shared_prefix, trim_padding

VIEW_NAMES = ("future", "rephrase", "counterfactual")


def _spliced(anchor_states, states, shared, width):
    """A sequence's states at its ``width`` positions [U, width, H]: the anchor's before shared [U], then those that
    ``encode_on_prefix`` gave from there on (states [U, S, H])."""
    U, L, H = anchor_states.shape[0], width, anchor_states.shape[2]
    positions = torch.arange(L, device=anchor_states.device).unsqueeze(0)
    index = (positions - shared.unsqueeze(1)).clamp(0, states.size(1) - 1)
    after = states.gather(1, index.unsqueeze(-1).expand(U, L, H))
    before = F.pad(anchor_states, (0, 0, 0, L - anchor_states.size(1)))  # the anchor may be the shorter
    return torch.where((positions < shared.unsqueeze(1)).unsqueeze(-1), before, after)


def _reads_views(tri_weight, views, future_weight):
    return (tri_weight > 0 and any(v in views for v in ("future", "rephrase"))) or future_weight > 0


class LUMOS(SASRec):
    def __init__(self, config, dataset):
        from recbole_lumos.config_schema import check_tri_view_loss  # (the schema imports this module)

        check_tri_view_loss(config)  # a model built outside the command line must not train a constant L_tri either
        super().__init__(config, dataset)
        self.tri_weight = config["tri_weight"]
        self.temperature = config["tri_temperature"]
        self.extra_negatives = config["tri_extra_negatives"]
        self.future_weight = config["future_weight"] or 0.0
        self.future_items = setting(config, "view_future_items")  # the most items F appends (a fixed shape for vmap)
        self.views_used = [name for name in VIEW_NAMES if name in (config["tri_views"] or [])]
        self.anchor_prefixes = config["tri_anchor"] == "prefix"
        # stop-gradients in L_tri; "is not False": a config saved before these keys existed reads None (True)
        self.anchor_gradient = config["tri_anchor_gradient"] is not False
        self.view_gradient = config["tri_view_gradient"] is not False
        # How a federated cohort's sequences are encoded (``federated/client.py``'s cohort_objective): True encodes
        # each anchor once and reads what its windows and views share with it off that encoding (``cohort_encoding``,
        # exact with dropout off); False encodes every sequence whole (``encode_views``), the reference
        self.fast_views = config["fast_views"] is not False
        # the head the tri-view loss reads states through (tri_head: private, shared: a linear layer; identity: none)
        if config["tri_head"] == "identity":
            self.projection = nn.Identity()
        else:
            self.projection = nn.Linear(self.hidden_size, self.hidden_size)
            self.projection.apply(self._init_weights)
        self._config, self._dataset = config, dataset  # calculate_loss builds the views on first use
        self.view_table = None  # [n_users, 4, L]: each user's training history (anchor) and its three views
        self.future_count = None  # [n_users]: items the generator appended to each user's F (attach_views)

    @staticmethod
    def needs_views(config):
        """Whether training under ``config`` reads generated views (a positive view with a non-zero weight, or
        the continuation of F as targets)."""
        return _reads_views(config["tri_weight"], config["tri_views"] or [], config["future_weight"] or 0.0)

    @property
    def uses_views(self):
        return _reads_views(self.tri_weight, self.views_used, self.future_weight)

    def training_anchors(self, histories, generator=None):
        """The anchors L_tri reads in a training step: the right-padded histories [..., L], or random prefixes."""
        return random_prefixes(histories, generator) if self.anchor_prefixes else histories

    # ----------------------------------------------------------------------------------------- encoder
    def encode(self, item_seq):
        """Hidden states at every position [B, L, H] of right-padded sequences (SASRec's forward, ungathered)."""
        positions = torch.arange(item_seq.size(-1), device=item_seq.device).expand_as(item_seq)
        x = self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        x = self.dropout(x)
        return self.trm_encoder(x, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]

    def last_states(self, item_seq, states=None):
        """Hidden state at the last non-padding position [B, H] (of ``states``, the sequences' encoding, if given)."""
        last = ((item_seq > 0).sum(-1) - 1).clamp(min=0)
        return self.gather_indexes(self.encode(item_seq) if states is None else states, last)

    # ----------------------------------------------------------------------------------------- encoder on a prefix
    # The same encoder as ``encode`` (RecBole's TransformerEncoder, the same parameters and dropout modules), written
    # out so that a sequence can attend to the cached keys and values of a prefix it shares with another one: with
    # causal attention the states, keys and values of a shared prefix do not depend on what follows it.
    def _embed(self, item_seq, positions):
        return self.dropout(self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions)))

    @staticmethod
    def _layer(layer, x, mask, prefix=None, query=None):
        """One of RecBole's TransformerLayers on x [B, S, H], whose keys and values follow ``prefix`` ((keys, values)
        [B, P, H] of earlier positions, or None); mask [B, 1, S, P + S], additive. query [B]: the output at that
        position of each row only ([B, 1, H]; the keys and values still come from every position), for a last layer
        whose last state alone is read. Returns (output [B, S, H], x's own (keys, values): what a later sequence
        sharing this one's prefix reads)."""
        attention = layer.multi_head_attention
        keys, values = attention.key(x), attention.value(x)
        if prefix is not None:
            keys_all, values_all = torch.cat([prefix[0], keys], 1), torch.cat([prefix[1], values], 1)
        else:
            keys_all, values_all = keys, values
        if query is not None:
            x = x.gather(1, query.view(-1, 1, 1).expand(-1, 1, x.size(-1)))
            mask = mask.gather(2, query.view(-1, 1, 1, 1).expand(-1, 1, 1, mask.size(-1)))

        def heads(t):  # [B, T, H] -> [B, heads, T, H / heads]
            return t.view(*t.shape[:2], attention.num_attention_heads, attention.attention_head_size).transpose(1, 2)

        scores = heads(attention.query(x)) @ heads(keys_all).transpose(-1, -2)
        probs = attention.attn_dropout(attention.softmax(scores / attention.sqrt_attention_head_size + mask))
        context = (probs @ heads(values_all)).transpose(1, 2).reshape(x.shape)
        hidden = attention.LayerNorm(attention.out_dropout(attention.dense(context)) + x)
        return layer.feed_forward(hidden), (keys, values)

    def _layers(self, x, mask, prefixes=None, last=None):
        """Every layer; returns (states, [(keys, values) of each layer]). last [B]: the states at that position of
        each row only [B, H] (the last layer computes no other)."""
        caches, layers = [], self.trm_encoder.layer
        for index, layer in enumerate(layers):
            query = last if index == len(layers) - 1 else None
            x, cache = self._layer(layer, x, mask, None if prefixes is None else prefixes[index], query)
            caches.append(cache)
        return (x if last is None else x.squeeze(1)), caches

    def encode_cached(self, item_seq):
        """``encode``'s states [B, L, H], and each layer's keys and values [B, L, H] for ``encode_on_prefix``."""
        positions = torch.arange(item_seq.size(-1), device=item_seq.device).expand_as(item_seq)
        return self._layers(self._embed(item_seq, positions), self.get_attention_mask(item_seq))

    def encode_on_prefix(self, item_seq, shared, caches, last_only=False):
        """States [B, S, H] of right-padded item_seq [B, L] at positions shared[b], shared[b] + 1, ... of each row
        (S: the longest such run; padding after a row's last item), whose first shared[b] items are those of the
        row's cached sequence (caches: ``encode_cached``'s, row by row). Exact: ``encode(item_seq)`` at those
        positions, up to rounding. last_only: the state at each row's last item alone [B, H]."""
        B, L = item_seq.shape
        length = (item_seq > 0).sum(-1)
        S = max(int((length - shared).max()) if B else 1, 1)
        offsets = torch.arange(S, device=item_seq.device)
        positions = shared.unsqueeze(1) + offsets  # [B, S]
        own = positions < length.unsqueeze(1)
        items = item_seq.gather(1, positions.clamp(max=L - 1)) * own
        x = self._embed(items, torch.where(own, positions, 0))
        P = int(shared.max()) if B else 0  # the prefix columns any row reads
        reads_prefix = (torch.arange(P, device=item_seq.device) < shared.unsqueeze(1)).unsqueeze(1).expand(B, S, P)
        causal = (offsets.view(1, S) <= offsets.view(S, 1)) & own.unsqueeze(1)  # [B, query, key]
        mask = torch.where(torch.cat([reads_prefix, causal], -1), 0.0, -10000.0).unsqueeze(1)  # RecBole's values
        last = (length - 1 - shared).clamp(min=0) if last_only else None
        return self._layers(x, mask, [(keys[:, :P], values[:, :P]) for keys, values in caches], last)[0]

    # ----------------------------------------------------------------------------------------- losses
    def next_item_loss(self, windows, reduction="mean"):
        """Cross-entropy of the next item at every position; windows [B, L+1], 0 = padding (ignored)."""
        total = self.next_item_loss_of_states(self.encode(windows[:, :-1]), windows)
        return total if reduction == "sum" else total / (windows[:, 1:] > 0).sum().clamp(min=1)

    def next_item_loss_of_states(self, states, windows):
        """The summed next-item cross-entropy of windows [B, L+1] from the states [B, >= L, H] of their inputs."""
        targets = windows[:, 1:]
        logits = states[:, : targets.size(1)] @ self.item_embedding.weight.t()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0,
                               reduction="sum")

    @staticmethod
    def stack_sequences(anchor, views, negatives):
        """anchor [U, L], views [U, 3, L], negatives [U, K, L] -> one batch [U * (4 + K), L] to encode at once."""
        U, K, L = negatives.shape
        return torch.cat([anchor, views.reshape(U * 3, L), negatives.reshape(U * K, L)])

    def tri_view_loss_of_states(self, h, anchor, num_negatives):
        """L_tri per anchor [U] from projected, normalised states h of ``stack_sequences``' batch.
        Anchors that are all padding (cohort padding) get 0."""
        U, D = anchor.size(0), h.size(-1)
        h_anchor, h_others = h[:U], h[U:]
        if not self.anchor_gradient:  # stop-gradients (tri_anchor_gradient, tri_view_gradient)
            h_anchor = h_anchor.detach()
        if not self.view_gradient:
            h_others = h_others.detach()
        h_views = h_others[: 3 * U].reshape(U, 3, D)
        h_neg = h_others[3 * U :].reshape(U, num_negatives, D)  # explicit: K may be 0 (no extra negatives)
        sim_views = (h_anchor.unsqueeze(1) * h_views).sum(-1) / self.temperature  # [U, 3]
        sim_neg = (h_anchor.unsqueeze(1) * h_neg).sum(-1) / self.temperature  # [U, K]
        rest = [sim_neg] + ([sim_views[:, 2:3]] if "counterfactual" in self.views_used else [])
        rest = torch.cat(rest, dim=1)
        loss = anchor.new_zeros(U, dtype=h.dtype)
        for index, name in enumerate(VIEW_NAMES[:2]):
            if name in self.views_used:
                logits = torch.cat([sim_views[:, index : index + 1], rest], dim=1)
                loss = loss - torch.log_softmax(logits, dim=1)[:, 0]
        return loss * (anchor > 0).any(-1).to(h.dtype)

    def future_item_losses(self, states, future, counts):
        """L_future summed per user [U]: cross-entropy of the last ``counts`` [U] items of F [U, L] (the appended
        continuation), each predicted from F's state one position earlier (states [U, L, H], F's encoding)."""
        length = (future > 0).sum(-1)
        counts = torch.minimum(counts.clamp(max=self.future_items), (length - 1).clamp(min=0))  # F[0]: no state before
        offsets = torch.arange(self.future_items, device=future.device)
        targets_at = (length - counts).unsqueeze(1) + offsets  # [U, M]
        valid = offsets < counts.unsqueeze(1)
        targets_at = torch.where(valid, targets_at, torch.ones_like(targets_at))
        inputs = states.gather(1, (targets_at - 1).unsqueeze(-1).expand(-1, -1, states.size(-1)))
        targets = future.gather(1, targets_at) * valid  # 0 (ignored) where a user has fewer targets
        logits = inputs @ self.item_embedding.weight.t()
        losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0, reduction="none")
        return losses.sum(1)

    def encode_views(self, anchor, views, negatives):
        """One encoding of ``stack_sequences``' batch: (last-position states [U * (4 + K), H], F's states at every
        position [U, L, H], which L_future reads)."""
        U = anchor.size(0)
        seqs = self.stack_sequences(anchor, views, negatives)
        states = self.encode(seqs)
        return self.last_states(seqs, states), states[U : 4 * U : 3]

    # ----------------------------------------------------------------------------------------- a cohort, encoded once
    def cohort_encoding(self, batch):
        """What the federated cohort objective reads, each anchor encoded once and the rest built on it:
        (the summed next-item loss of batch["windows"], last-position states [U, 4 + K, H] of each anchor and of its
        F, P, N and negatives, F's states at every position [U, L, H] or None without future_weight).
        The same numbers, up to rounding, as ``next_item_loss(windows, "sum")`` and ``encode_views`` (whose rows are
        grouped by kind, not by anchor). Under dropout a window or view reads the anchor's dropout draws on the
        prefix it shares with it, where the plain path draws its own."""
        anchor, views = batch["anchor"], batch["views"]
        prefixes = [shared_prefix(views[:, index], anchor) for index in range(views.size(1))]
        anchor = trim_padding(anchor)[0]  # cut with the views, which may be longer (F): encoded to its own length
        anchor_states, caches = self.encode_cached(anchor)
        rec = self.next_item_loss_on_anchors(batch["windows"], batch.get("window_anchor"), anchor, anchor_states)
        last, future_states = [self.last_states(anchor, anchor_states)], None
        for index, shared in enumerate(prefixes):  # F, P, N: each from its first item that differs from the anchor
            view = views[:, index]
            if index == 0 and self.future_weight:  # L_future reads F's states at its appended items
                states = self.encode_on_prefix(view, shared, caches)
                last.append(self.gather_indexes(states, ((view > 0).sum(-1) - 1 - shared).clamp(min=0)))
                future_states = _spliced(anchor_states, states, shared, view.size(1))
            else:
                last.append(self.encode_on_prefix(view, shared, caches, last_only=True))
        negatives = self.negative_states(anchor, batch["negatives"], batch.get("negative_pool"))
        return rec, torch.cat([torch.stack(last, 1), negatives], 1), future_states

    def next_item_loss_on_anchors(self, windows, window_anchor, anchor, anchor_states):
        """``next_item_loss(windows, "sum")``, the windows that are their user's anchor (a history that fits in one
        window, anchored whole) read off the anchor's states [U, L, H]: under causal attention a window's inputs (the
        anchor but its last item) have the anchor's states. window_anchor [W]: the row of ``anchor`` holding each
        window's user (None: every window is encoded)."""
        if window_anchor is None:
            return self.next_item_loss(windows, "sum")
        own = anchor[window_anchor]
        width = min(windows.size(1), own.size(1))
        same = ((windows > 0).sum(-1) == (own > 0).sum(-1)) & (windows[:, :width] == own[:, :width]).all(-1)
        rows = window_anchor[same]
        total = self.next_item_loss_of_states(anchor_states[rows], anchor[rows])
        if not bool(same.all()):
            total = total + self.next_item_loss(windows[~same], "sum")
        return total

    def negative_states(self, anchor, negatives, pool=None):
        """Last-position states [U, K, H] of the negatives [U, K, L]. With pool [K, L] (negatives[u, k] = pool[k] cut
        at anchor u's length: ``sequences.shared_negatives``) one encoding of the pool serves every anchor, each
        reading it at its own last position (causal attention)."""
        U, K, _ = negatives.shape
        if K == 0:
            return self.item_embedding.weight.new_zeros(U, 0, self.hidden_size)
        if pool is None:
            negatives = trim_padding(negatives)[0]
            return self.last_states(negatives.reshape(U * K, -1)).view(U, K, -1)
        last = ((anchor > 0).sum(-1) - 1).clamp(min=0)
        return self.encode(pool[:, : int(last.max()) + 1])[:, last].transpose(0, 1)  # no anchor reads further

    def tri_view_losses(self, anchor, views, negatives):
        """anchor [U, L]; views [U, 3, L] (future, rephrase, counterfactual); negatives [U, K, L] -> L_tri [U]."""
        return self.view_losses(anchor, views, negatives)[0]

    def view_losses(self, anchor, views, negatives, future_count=None):
        """(L_tri [U], L_future summed per user [U] or None without future_count), from one encoding."""
        hidden, future_states = self.encode_views(anchor, views, negatives)
        tri = self.tri_view_loss_of_states(F.normalize(self.projection(hidden), dim=-1), anchor, negatives.size(1))
        if future_count is None:
            return tri, None
        return tri, self.future_item_losses(future_states, views[:, 0], future_count)

    def client_loss(self, batch):
        """The objective on one client's data (or a batch of users): (total, rec, tri).
        batch: windows [W, L+1] of its history; anchor [U, L], views [U, 3, L], negatives [U, K, L], future_count
        [U] (items appended in each F)."""
        rec = self.next_item_loss(batch["windows"])
        if not self.uses_views:
            return rec, rec.detach(), torch.zeros_like(rec)
        anchors = (batch["anchor"] > 0).any(-1).sum().clamp(min=1)
        counts = batch["future_count"] if self.future_weight else None
        tri, future = self.view_losses(batch["anchor"], batch["views"], batch["negatives"], counts)
        tri = tri.sum() / anchors
        total = rec + self.tri_weight * tri
        if future is not None:
            total = total + self.future_weight * future.sum() / counts.sum().clamp(min=1)
        return total, rec.detach(), tri.detach()

    def calculate_loss(self, interaction):
        """RecBole's contract: the training objective of a batch of (history prefix, next item) rows.
        L_rec is SASRec's next-item loss; L_tri is computed on the batch's users' training histories and views.
        Returns L_rec alone when views are off (exactly SASRec), else (L_rec, tri_weight * L_tri) and, with
        future_weight, future_weight * L_future (the batch users' appended items): RecBole's trainer sums the
        parts and logs each."""
        rec = super().calculate_loss(interaction)
        if not self.uses_views:
            return rec
        if self.view_table is None:
            if self._config["tri_anchor"] == "aligned_prefix":
                raise LumosError("tri_anchor aligned_prefix redraws the views every round: train LUMOS with the "
                                 "plugin's trainer (run_lumos.py), not RecBole's")
            self.attach_views(self._build_views())
        users = interaction[self.USER_ID].to(self.view_table.device)
        rows, counts = self.view_table[users], self.future_count[users] if self.future_weight else None
        anchor, views = self.training_anchors(rows[:, 0]), rows[:, 1:]
        negatives = random_negatives(anchor, self.extra_negatives, self.n_items)
        tri, future = self.view_losses(anchor, views, negatives, counts)
        tri = tri.sum() / (anchor > 0).any(-1).sum().clamp(min=1)
        if future is None:
            return rec, self.tri_weight * tri
        return rec, self.tri_weight * tri, self.future_weight * future.sum() / counts.sum().clamp(min=1)

    # ----------------------------------------------------------------------------------------- views
    def _build_views(self):
        from recbole_lumos.augment import create_view_builder  # generation stack: loaded only when needed

        histories = self._dataset.client_histories()
        return histories, create_view_builder(self._config, self._dataset).build(histories)

    def attach_views(self, histories_and_views):
        """Keep every user's anchor and views as one table for ``calculate_loss``:
        ({user: items}, {user: ClientViews})."""
        histories, views = histories_and_views
        L = self.max_seq_length
        table = torch.zeros(self._dataset.num(self.USER_ID), 4, L, dtype=torch.long)
        counts = torch.zeros(self._dataset.num(self.USER_ID), dtype=torch.long)
        for user, items in histories.items():
            v = views[user]
            table[user] = torch.from_numpy(right_pad([items, v.future, v.rephrase, v.counterfactual], L))
            counts[user] = appended_count(items, v.future)
        self.view_table = table.to(self.item_embedding.weight.device)
        self.future_count = counts.to(self.item_embedding.weight.device)
