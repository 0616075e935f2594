"""LUMOS: a SASRec backbone (shared across clients) with a private projection head and a tri-view loss.

On a client:  L = L_rec + tri_weight * L_tri
  L_rec: next-item cross-entropy at every position of the client's training windows;
  L_tri = - sum_{v in F, P} log( e^{s(h,h_v)} / (e^{s(h,h_v)} + e^{s(h,h_N)} + sum_j e^{s(h,h_j)}) ),
          s(a, b) = cos(a, b) / tau on projected last-position states; the h_j are random-item sequences
          drawn on the client (never another client's data).
Items are scored with the backbone alone (SASRec's ``full_sort_predict``), so RecBole's evaluator serves it.
The baselines are the same class under other configs (see ``baselines.py``).
"""
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn
from torch.func import functional_call, vmap

VIEW_NAMES = ("future", "rephrase", "counterfactual")


def _reads_views(tri_weight, views):
    return tri_weight > 0 and any(v in views for v in ("future", "rephrase"))


class LUMOS(SASRec):
    private_prefixes = ("projection.",)  # kept on each client, never sent to the server

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.tri_weight = config["tri_weight"]
        self.temperature = config["tri_temperature"]
        self.views_used = [name for name in VIEW_NAMES if name in (config["tri_views"] or [])]
        self.projection = nn.Linear(self.hidden_size, self.hidden_size)
        self.projection.apply(self._init_weights)

    @staticmethod
    def needs_views(config):
        """Whether training under ``config`` reads generated views (a positive view with a non-zero weight)."""
        return _reads_views(config["tri_weight"], config["tri_views"] or [])

    @property
    def uses_views(self):
        return _reads_views(self.tri_weight, self.views_used)

    def is_private(self, name):
        return name.startswith(self.private_prefixes)

    def encode(self, item_seq):
        """Hidden states at every position [B, L, H] of right-padded sequences (SASRec's forward, ungathered)."""
        positions = torch.arange(item_seq.size(-1), device=item_seq.device).expand_as(item_seq)
        x = self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        x = self.dropout(x)
        return self.trm_encoder(x, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]

    def next_item_loss(self, windows, reduction="mean"):
        """Cross-entropy of the next item at every position; windows [B, L+1], 0 = padding (ignored)."""
        inputs, targets = windows[:, :-1], windows[:, 1:]
        logits = self.encode(inputs) @ self.item_embedding.weight.t()
        total = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0, reduction="sum")
        return total if reduction == "sum" else total / (targets > 0).sum().clamp(min=1)

    def _projected_last(self, item_seq, heads=None):
        """Projected, normalised last-position states; heads: per-row projection parameters {name: [R, ...]}."""
        last = ((item_seq > 0).sum(-1) - 1).clamp(min=0)
        hidden = self.gather_indexes(self.encode(item_seq), last)
        if heads is None:
            return F.normalize(self.projection(hidden), dim=-1)
        project = vmap(lambda params, h: functional_call(self.projection, params, (h,)))
        return F.normalize(project(heads, hidden), dim=-1)

    def tri_view_losses(self, anchor, views, negatives, heads=None):
        """anchor [U, L]; views [U, 3, L] (future, rephrase, counterfactual); negatives [U, K, L] -> [U].

        heads: each anchor's own projection head ({name: [U, ...]}), when anchors of several clients share a
        batch. Anchors that are all padding (cohort padding) get 0.
        """
        U, K, L = negatives.shape
        seqs = torch.cat([anchor, views.reshape(U * 3, L), negatives.reshape(U * K, L)])
        if heads is not None:  # every sequence is projected by its anchor's head
            owner = torch.cat([torch.arange(U), torch.arange(U).repeat_interleave(3), torch.arange(U).repeat_interleave(K)])
            heads = {name: value[owner.to(value.device)] for name, value in heads.items()}
        h = self._projected_last(seqs, heads)
        D = h.size(-1)  # explicit: K may be 0 (no extra negatives)
        h_anchor, h_views, h_neg = h[:U], h[U : 4 * U].reshape(U, 3, D), h[4 * U :].reshape(U, K, D)
        sim_views = (h_anchor.unsqueeze(1) * h_views).sum(-1) / self.temperature  # [U, 3]
        sim_neg = (h_anchor.unsqueeze(1) * h_neg).sum(-1) / self.temperature  # [U, K]
        denominator_rest = [sim_neg]
        if "counterfactual" in self.views_used:
            denominator_rest.append(sim_views[:, 2:3])
        rest = torch.cat(denominator_rest, dim=1)
        loss = anchor.new_zeros(U, dtype=h.dtype)
        for index, name in enumerate(VIEW_NAMES[:2]):
            if name in self.views_used:
                logits = torch.cat([sim_views[:, index : index + 1], rest], dim=1)
                loss = loss - torch.log_softmax(logits, dim=1)[:, 0]
        return loss * (anchor > 0).any(-1).to(h.dtype)

    def client_loss(self, batch):
        """The loss of one client (or one centralised batch): (total, rec, tri)."""
        rec = self.next_item_loss(batch["windows"])
        if not self.uses_views:
            return rec, rec.detach(), torch.zeros_like(rec)
        anchors = (batch["anchor"] > 0).any(-1).sum().clamp(min=1)
        tri = self.tri_view_losses(batch["anchor"], batch["views"], batch["negatives"]).sum() / anchors
        return rec + self.tri_weight * tri, rec.detach(), tri.detach()

    def cohort_objective(self, batch, heads, client_weight):
        """sum_c w_c * L_c over the clients of a flattened cohort batch (see federated/client.py), with each
        anchor projected by its own client's head. With w_c = the client's target count, the w_c-weighted mean
        next-item losses add up to the plain sum over all targets. Returns (objective, mean rec, mean tri)."""
        rec_sum = self.next_item_loss(batch["windows"], reduction="sum")
        rec_mean = rec_sum.detach() / (batch["windows"][:, 1:] > 0).sum().clamp(min=1)
        if not self.uses_views:
            return rec_sum, rec_mean, torch.zeros_like(rec_mean)
        owner = batch["owner"]
        users = torch.bincount(owner, minlength=len(client_weight)).to(client_weight.dtype)
        tri = self.tri_view_losses(batch["anchor"], batch["views"], batch["negatives"], heads)
        objective = rec_sum + self.tri_weight * (tri * (client_weight / users)[owner]).sum()
        return objective, rec_mean, tri.detach().mean()
