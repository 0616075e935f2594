"""Item-sequence tensors the model and the client side both build: right padding, random item sequences, prefixes."""
import numpy as np
import torch


def right_pad(sequences, width):
    """[len(sequences), width] int64: each sequence's last ``width`` items, then zeros (padding)."""
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)[-width:]
        out[row, : len(seq)] = seq
    return out


def trim_padding(*tensors, min_width=1):
    """The tensors (same last dimension, right-padded) cut after their last column holding an item in any row.
    Exact: attention is causal and masks padding, positions count from the left, so no item's state depends on
    the padding after it; a batch of short histories (sparse data) costs its own length, not max_seq_length."""
    filled = torch.stack([(t > 0).reshape(-1, t.shape[-1]).any(0) for t in tensors]).any(0)  # [L]
    width = max(int(filled.nonzero().max()) + 1 if filled.any() else 0, min_width)
    return tuple(t[..., :width] for t in tensors)


def random_negatives(anchor, num_negatives, num_items, generator=None):
    """[..., U, K, L] random catalogue items shaped like each anchor: negatives that need no other user's data."""
    shape = anchor.shape[:-1] + (num_negatives, anchor.shape[-1])
    device = anchor.device if generator is None else generator.device
    items = torch.randint(1, num_items, shape, generator=generator, device=device).to(anchor.device)
    return items * (anchor > 0).unsqueeze(-2)


def shared_negatives(anchor, num_negatives, num_items, generator=None):
    """(pool [K, L], negatives [U, K, L]): K random-item sequences as wide as the anchors [U, L], each anchor's
    negatives being the pool's rows cut at its own length. The anchors of a batch share their negatives (in-batch,
    as contrastive losses often do), so the model encodes K sequences, not U * K (``LUMOS.negative_states``)."""
    pool = random_negatives(anchor.new_ones(1, anchor.size(-1)), num_negatives, num_items, generator)[0]
    return pool, pool * (anchor > 0).unsqueeze(-2)


def shared_prefix(seqs, others):
    """How many leading items each row of seqs [B, L] shares with the same row of others [B, L] (equal, not padding),
    at most its length - 1: its last item, whose state is the one read, is always encoded."""
    same = ((seqs == others) & (seqs > 0)).long().cumprod(-1).sum(-1)
    return torch.minimum(same, ((seqs > 0).sum(-1) - 1).clamp(min=0))


def random_prefixes(sequences, generator=None):
    """Right-padded sequences [..., L], each cut at a random point of its second half: a row of n >= 2 items keeps
    its first k, k uniform in [ceil(n / 2), n - 1], so it is never the whole row; shorter rows stay as they are."""
    n = (sequences > 0).sum(-1)
    low, high = (n + 1) // 2, (n - 1).clamp(min=1)
    device = sequences.device if generator is None else generator.device
    draw = torch.rand(n.shape, generator=generator, device=device).to(sequences.device)
    keep = torch.minimum(low + (draw * (high - low + 1)).long(), high)
    return sequences * (torch.arange(sequences.size(-1), device=sequences.device) < keep.unsqueeze(-1))
