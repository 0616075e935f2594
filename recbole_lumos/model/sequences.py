"""Item-sequence tensors the model and the client side both build: right padding, random item sequences."""
import numpy as np
import torch


def right_pad(sequences, width):
    """[len(sequences), width] int64: each sequence's last ``width`` items, then zeros (padding)."""
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)[-width:]
        out[row, : len(seq)] = seq
    return out


def random_negatives(anchor, num_negatives, num_items, generator=None):
    """[..., U, K, L] random catalogue items shaped like each anchor: negatives that need no other user's data."""
    shape = anchor.shape[:-1] + (num_negatives, anchor.shape[-1])
    device = anchor.device if generator is None else generator.device
    items = torch.randint(1, num_items, shape, generator=generator, device=device).to(anchor.device)
    return items * (anchor > 0).unsqueeze(-2)
