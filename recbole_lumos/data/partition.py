"""The client partitioner: which users' data each federated client holds.

Default (``num_clients: ~``): one client per user (cross-device). With ``num_clients: N`` users are grouped:
``iid`` shuffles them into N near-equal groups; ``dirichlet`` gives each client a skewed mix of user labels
(each user's dominant item attribute, e.g. genre) drawn from Dirichlet(alpha), the usual non-IID benchmark.
"""
import numpy as np

from recbole_lumos.errors import LumosError


def partition_clients(users, num_clients=None, scheme="iid", alpha=0.5, labels=None, seed=0):
    """users: array of user ids -> list of arrays of user ids, one per client, none empty."""
    users = np.asarray(users)
    if not num_clients:
        return [users[i : i + 1] for i in range(len(users))]
    if not 1 <= num_clients <= len(users):
        raise LumosError(f"num_clients must be between 1 and the {len(users)} users, got {num_clients}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [part for part in np.array_split(rng.permutation(users), num_clients)]
    if scheme != "dirichlet":
        raise LumosError(f"client_partition must be 'iid' or 'dirichlet', got {scheme!r}")
    if labels is None:
        raise LumosError("client_partition 'dirichlet' needs an item attribute: set dirichlet_field")
    groups = [[] for _ in range(num_clients)]
    labels = np.asarray(labels)
    for label in np.unique(labels):
        members = rng.permutation(users[labels == label])
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for group, part in zip(groups, np.split(members, cuts)):
            group.extend(part.tolist())
    for group in groups:  # a client with no user cannot train: borrow one from the largest
        if not group:
            group.append(max(groups, key=len).pop())
    return [np.array(sorted(group)) for group in groups]


def dominant_labels(histories, users, item_attribute):
    """Each user's most frequent attribute token (0 = none) over its training items; item_attribute [n_items, k]."""
    labels = []
    for user in users:
        tokens = item_attribute[histories[user]].ravel()
        tokens = tokens[tokens > 0]
        labels.append(np.bincount(tokens).argmax() if len(tokens) else 0)
    return np.array(labels)
