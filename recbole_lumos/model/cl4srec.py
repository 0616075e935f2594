"""CL4SRec (Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022) on RecBole's SASRec.

    L = L_rec + cl_weight * L_cl
  L_rec: SASRec's next-item loss;
  L_cl:  NT-Xent over the 2N augmented sequences of a batch of N: each sequence gets two augmentations, each drawn
         from {crop, mask, reorder}; for the pair (i, j) of one sequence,
             l_i = -log( exp(sim(s_i, s_j) / tau) / sum_{k != i} exp(sim(s_i, s_k) / tau) ),
         averaged over the 2N anchors; the negatives are the batch's other 2N - 2 augmented sequences.
         s = the encoder's state at the last position; sim = dot product (the paper's; ``cl_similarity: cos``
         the SimCLR variant), tau = ``cl_temperature`` (1: the paper has none).
  crop:    a random contiguous stretch of floor(eta * n) items (at least 1: an empty sequence has no state);
  mask:    floor(gamma * n) random items replaced by the mask token, a new item id (n_items): the item embedding
           has one more row, never scored;
  reorder: a random contiguous stretch of floor(beta * n) items shuffled.
Augmentations are drawn at every step from torch's RNG (seeded by RecBole's ``seed``).

``CL4SRec`` is a plain RecBole model: RecBole's Trainer and SequentialDataset train it on (prefix, next item) rows.
``FedCL4SRec`` is the same loss on each client in the plugin's federated trainer: the NT-Xent batch of a client is
its own prefix rows (those its next-item loss trains), so no negative ever comes from another client's data.
"""
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_lumos.errors import LumosError
from recbole_lumos.model.federate import FederatedSequential
from recbole_lumos.model.sequences import trim_padding


# ------------------------------------------------------------------------------------------------ augmentations
# Each takes right-padded rows [B, L] (0 = padding) and returns rows of the same shape. RecBole's own
# crop_itemseq/reorder_itemseq transforms draw from Python's ``random`` row by row and crop a 1-item row to nothing.
def _share(seqs, ratio):
    """floor(ratio * n) per row, as the paper counts (in float64, as Python's math.floor(ratio * n))."""
    return ((seqs > 0).sum(-1).double() * ratio).floor().long()


def _start(seqs, span, generator):
    """A uniform start in [0, n - span] per row."""
    room = (seqs > 0).sum(-1) - span + 1
    return (torch.rand(room.shape, generator=generator, device=seqs.device) * room).long()


def crop(seqs, eta, generator=None):
    keep = _share(seqs, eta).clamp(min=1)
    positions = torch.arange(seqs.size(-1), device=seqs.device)
    index = (_start(seqs, keep, generator).unsqueeze(-1) + positions).clamp(max=seqs.size(-1) - 1)
    return seqs.gather(-1, index) * (positions < keep.unsqueeze(-1))


def mask(seqs, gamma, token, generator=None):
    scores = torch.rand(seqs.shape, generator=generator, device=seqs.device).masked_fill(seqs == 0, 2.0)
    rank = scores.argsort(-1).argsort(-1)  # the k lowest-scored items of a row: a uniform k-subset
    return seqs.masked_fill(rank < _share(seqs, gamma).unsqueeze(-1), token)


def reorder(seqs, beta, generator=None):
    span = _share(seqs, beta).unsqueeze(-1)
    begin = _start(seqs, span.squeeze(-1), generator).unsqueeze(-1)
    positions = torch.arange(seqs.size(-1), device=seqs.device).expand_as(seqs)
    inside = (positions >= begin) & (positions < begin + span)
    # sort keys: a position outside the span keeps its own; inside, random keys within [begin, begin + span)
    draw = torch.rand(seqs.shape, generator=generator, device=seqs.device, dtype=torch.float64)
    keys = torch.where(inside, begin + draw * span, positions.double())
    return seqs.gather(-1, keys.argsort(dim=-1, stable=True))  # stable: a key rounded up to begin + span stays inside


def nt_xent(z1, z2, temperature=1.0, similarity="dot", valid=None):
    """NT-Xent within each group g of the pairs (z1[g, i], z2[g, i]): z1, z2 [G, N, H]; valid [G, N] (False:
    padding, neither anchor nor negative). Returns each group's mean over its 2 n_g anchors [G] (0 if empty)."""
    G, N = z1.shape[:2]
    z = torch.cat([z1, z2], 1)
    if similarity == "cos":
        z = F.normalize(z, dim=-1)
    sim = z @ z.transpose(1, 2) / temperature  # [G, 2N, 2N]
    valid = torch.cat([valid, valid], 1) if valid is not None else z.new_ones(G, 2 * N, dtype=torch.bool)
    rows = torch.arange(2 * N, device=z.device)
    positive = (rows + N) % (2 * N)
    allowed = valid.unsqueeze(1) & (rows.view(-1, 1) != rows.view(1, -1))  # k != i, k not padding
    allowed[:, rows, positive] = True  # (a padding anchor keeps a finite row: its loss is dropped below)
    losses = -sim.masked_fill(~allowed, float("-inf")).log_softmax(-1)[:, rows, positive] * valid
    return losses.sum(1) / valid.sum(1).clamp(min=1)


# ------------------------------------------------------------------------------------------------ the model
class CL4SRec(SASRec):
    SIMILARITIES = ("dot", "cos")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_weight, self.temperature = config["cl_weight"], config["cl_temperature"]
        self.similarity = config["cl_similarity"]
        if self.similarity not in self.SIMILARITIES:
            raise LumosError(f"cl_similarity must be one of dot, cos, got {self.similarity!r}")
        self.eta, self.gamma, self.beta = config["crop_eta"], config["mask_gamma"], config["reorder_beta"]
        self.mask_token = self.n_items  # a new item id: one more embedding row, never scored
        self.item_embedding = nn.Embedding(self.n_items + 1, self.hidden_size, padding_idx=0)
        self._init_weights(self.item_embedding)

    def augment(self, seqs):
        """Two augmentations of each row [B, L], each one of crop, mask, reorder drawn per row."""
        ops = torch.stack([crop(seqs, self.eta), mask(seqs, self.gamma, self.mask_token), reorder(seqs, self.beta)])
        choice = torch.randint(3, (2, seqs.size(0), 1), device=seqs.device).expand(-1, -1, seqs.size(-1))
        first, second = ops.gather(0, choice)  # [2, B, L]: view k of row b is operation choice[k, b] of it
        return first, second

    def cl_losses(self, seqs, owner=None, groups=1):
        """L_cl of each group of rows [groups]: rows [B, L] (whole batch one group, or grouped by ``owner`` [B])."""
        views = torch.cat(trim_padding(*self.augment(seqs)))  # one encoding; cropped rows need fewer columns
        z1, z2 = self.forward(views, (views > 0).sum(-1)).chunk(2)
        if owner is None:
            return nt_xent(z1[None], z2[None], self.temperature, self.similarity)
        order = owner.argsort(stable=True)  # rows into [groups, most rows of a group, H], padded
        counts = torch.bincount(owner, minlength=groups)
        slot = torch.arange(len(owner), device=owner.device) - (counts.cumsum(0) - counts)[owner[order]]
        width = int(counts.max()) if len(owner) else 0
        padded = [z.new_zeros(groups, width, z.size(-1)).index_put((owner[order], slot), z[order]) for z in (z1, z2)]
        valid = torch.zeros(groups, width, dtype=torch.bool, device=owner.device)
        valid[owner[order], slot] = True
        return nt_xent(*padded, self.temperature, self.similarity, valid)

    def rec_losses(self, item_seq, item_seq_len, pos_items):
        """SASRec's CE per row [B], over the real items only (not the mask token)."""
        item_seq = trim_padding(item_seq)[0]  # exact (causal attention, positions from the left): short rows cost less
        logits = self.forward(item_seq, item_seq_len) @ self.item_embedding.weight[: self.n_items].t()
        return F.cross_entropy(logits, pos_items, reduction="none")

    def calculate_loss(self, interaction):
        """RecBole's contract: (L_rec, cl_weight * L_cl); RecBole's trainer sums the parts and logs each."""
        item_seq = interaction[self.ITEM_SEQ]
        if self.loss_type == "CE":
            rec = self.rec_losses(item_seq, interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]).mean()
        else:  # BPR samples real items only: SASRec's loss as it is
            rec = super().calculate_loss(interaction)
        return rec, self.cl_weight * self.cl_losses(item_seq)[0]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_embedding.weight[: self.n_items].t()


class FedCL4SRec(FederatedSequential, CL4SRec):
    """CL4SRec's loss on each client: its next-item loss over its windows + cl_weight * NT-Xent over its own prefix
    rows. Every parameter is shared (FedSASRec's federation, no views, no private head)."""

    federated_from = CL4SRec

    def next_item_loss(self, windows, reduction="mean"):
        losses = self.rec_losses(*self.prefix_rows(windows))
        return losses.sum() if reduction == "sum" else losses.sum() / max(len(losses), 1)

    def client_loss(self, batch):
        """(total, rec, cl) of one client's windows [W, L+1]."""
        item_seq, item_seq_len, pos_items = self.prefix_rows(batch["windows"])
        rec = self.rec_losses(item_seq, item_seq_len, pos_items).sum() / max(len(pos_items), 1)
        cl = self.cl_losses(item_seq)[0]
        return rec + self.cl_weight * cl, rec.detach(), cl.detach()

    def cohort_objective(self, batch, heads, client_weight):
        """sum_c w_c * L_c over a flattened cohort (``federated/client.py``'s summed path), w_c = client c's target
        count: each client's NT-Xent over its own rows only. Returns (objective, mean rec, mean cl over clients)."""
        windows = batch["windows"]
        owner = batch.get("window_owner")
        if owner is None:
            owner = window_owner(windows, client_weight)
        item_seq, item_seq_len, pos_items = self.prefix_rows(windows)
        row_owner = owner.unsqueeze(1).expand(windows[:, 1:].shape)[windows[:, 1:] > 0]  # prefix_rows' row order
        rec = self.rec_losses(item_seq, item_seq_len, pos_items)
        cl = self.cl_losses(item_seq, row_owner, len(client_weight))
        objective = rec.sum() + self.cl_weight * (client_weight.to(cl.dtype) * cl).sum()
        trained = torch.bincount(row_owner, minlength=len(client_weight)) > 0
        return objective, rec.detach().sum() / max(len(rec), 1), cl.detach()[trained].mean()


def window_owner(windows, client_weight):
    """Each window's client in a flattened cohort batch (``ClientData.batch_of_users``: the clients' windows one
    after another, in the order of ``client_weight``, each client's target count): where the running count of
    targets crosses each client's running total."""
    seen = (windows[:, 1:] > 0).sum(-1).cumsum(0)
    bounds = client_weight.round().long().cumsum(0).to(seen.device)
    if len(seen) and (not len(bounds) or int(bounds[-1]) != int(seen[-1])):
        raise LumosError("FedCL4SRec: the cohort's windows hold another number of targets than its client weights "
                         "count: pass batch['window_owner'] with the batch")
    return torch.searchsorted(bounds, seen)
