"""Noisy and malicious clients, simulated on the client side only: the server receives ordinary ClientUpdates
and cannot tell a fake client from a real one.

* ``noise_ratio: r``: a share r of every client's TRAINING items replaced by random catalogue items (seeded), before
  its views are built; validation and test items are RecBole's and stay clean.
* ``attack``: fake clients ADDED to the population (``attack_fraction`` x the real clients), one user each:
    random            random items (untargeted: degrades the model);
    bandwagon         popular items, then the target items (targets look like what everybody watches next);
    target_promotion  random items each followed by a target item (a target after anything).
  ``attack_mode: data`` (data poisoning): they train honestly on these histories. ``attack_mode: model`` (model
  poisoning): each sends a crafted update instead, one large step that raises the target items' scores after
  its histories, ``attack_boost`` times a local step, so that it survives averaging with the honest updates.
* ER@K (exposure rate): share of test users with a target item in their top K, from the model's full-sort scores.
"""
import numpy as np
import torch

from recbole_lumos.errors import LumosError

ATTACKS = ("none", "random", "bandwagon", "target_promotion")
DEFAULT_TARGET_COUNT = 5  # attack_target ~: the 5 least popular items of the training data


def add_noise(histories, ratio, n_items, seed):
    """{user: items} with round(ratio * len) items of each history replaced by a different random item."""
    rng = np.random.default_rng(seed)
    noisy = {}
    for user, items in histories.items():
        items = items.copy()
        where = rng.choice(len(items), size=round(ratio * len(items)), replace=False)
        # a draw among the n_items - 2 other real items (ids 1..n_items-1): a replacement never equals the original
        draw = rng.integers(1, n_items - 1, size=len(where))
        items[where] = draw + (draw >= items[where])
        noisy[user] = items
    return noisy


def item_counts(histories, n_items):
    return np.bincount(np.concatenate(list(histories.values())), minlength=n_items)


def default_targets(histories, n_items, count=DEFAULT_TARGET_COUNT):
    """The least popular items that the training data holds at all (rarest first, then by id)."""
    counts = item_counts(histories, n_items)
    seen = np.flatnonzero(counts[1:] > 0) + 1
    return seen[np.argsort(counts[seen], kind="stable")][:count].tolist()


def fake_histories(kind, count, targets, histories, n_items, seed):
    """``count`` fabricated histories {new user id: items}, as long as real ones (lengths drawn from them)."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice([len(h) for h in histories.values()], size=count)
    popular = np.argsort(-item_counts(histories, n_items)[1:], kind="stable")[: max(20, len(targets))] + 1
    targets = np.asarray(targets, dtype=np.int64)
    first = max(histories) + 1
    fakes = {}
    for k, length in enumerate(lengths):
        length = max(int(length), 2 * len(targets), 2)
        if kind == "random":
            items = rng.choice(np.arange(1, n_items), size=min(length, n_items - 1), replace=False)
        elif kind == "bandwagon":
            items = np.concatenate([rng.choice(popular, size=length - len(targets)), rng.permutation(targets)])
        elif kind == "target_promotion":
            fillers = rng.integers(1, n_items, size=length // 2)
            items = np.stack([fillers, rng.choice(targets, size=length // 2)], axis=1).reshape(-1)
        else:
            raise LumosError(f"attack must be one of {', '.join(ATTACKS)}, got {kind!r}")
        fakes[first + k] = items.astype(np.int64)
    return fakes


def crafted_update(model, params, sequences, targets, scale):
    """Model poisoning: -scale * gradient of the target items' cross-entropy after ``sequences`` [B, L], taken at
    ``params`` (the shared parameters the server sent, live in ``model``): a step that raises the targets' scores."""
    logits = model.last_states(sequences) @ model.item_embedding.weight[: model.n_items].t()  # (CL4SRec: + a mask row)
    loss = -torch.log_softmax(logits, dim=-1)[:, targets].mean()
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else -scale * g).detach() for (n, p), g in zip(params.items(), grads)}


def resolve_targets(config, dataset, histories, n_items):
    """Internal ids of the attack targets: ``attack_target`` (item ids as in the data files) or the default."""
    if config["attack_target"] is None:
        return default_targets(histories, n_items)
    tokens = [str(t) for t in config["attack_target"]]
    known = set(dataset.field2token_id[dataset.iid_field])
    missing = [t for t in tokens if t not in known]
    if missing:
        raise LumosError(f"attack_target items {missing} are not in the dataset: give item ids as in the .inter file")
    return [int(i) for i in dataset.token2id(dataset.iid_field, tokens)]


class Exposure:
    """ER@K accumulated over RecBole's full-sort evaluation batches (one row per test user)."""

    def __init__(self, targets, topk):
        self.targets, self.topk = torch.as_tensor(targets), sorted(topk)
        self.reset()

    def reset(self):
        self.hits, self.users = torch.zeros(len(self.topk)), 0

    def add(self, scores):
        top = scores.topk(self.topk[-1], dim=1).indices
        exposed = torch.isin(top, self.targets.to(top.device))
        for i, k in enumerate(self.topk):
            self.hits[i] += exposed[:, :k].any(1).sum().item()
        self.users += scores.size(0)

    def result(self):
        return {f"er@{k}": round(float(h) / max(self.users, 1), 4) for k, h in zip(self.topk, self.hits)}
