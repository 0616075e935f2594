"""The view-builder interface: what every generator of LUMOS views (random, embedding, LLM) implements.

A builder runs on a client. It receives that client's TRAINING history only (internal item ids, oldest
first) and returns three item-id sequences. Nothing in here ever sees validation or test items.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClientViews:
    """The three LUMOS views of one client's history, as internal item ids (0 is padding, never used)."""

    future: list  # F: history followed by predicted continuation items (positive; ``place_views``)
    rephrase: list  # P: history with some recent items swapped for equivalent ones (positive)
    counterfactual: list  # N: history whose last items are swapped for ones contrary to the user's taste (negative)
    anchor: list = None  # the sequence the views were placed on, if not the whole training history (prefix_views.py)


def appended_count(history, future):
    """How many items F appends to the history: its continuation, if F is the history (or, where the model's window
    has no room for all of it, the history less its last items: ``place_views``) followed by items the history does
    not hold (generated views), else 0 (a random or perturbed F is the history changed, not continued)."""
    history, future = list(np.asarray(history)), list(np.asarray(future))
    if len(future) > len(history) and future[: len(history)] == history:
        return len(future) - len(history)
    if len(future) < len(history):
        return 0
    kept = next((k for k, (a, b) in enumerate(zip(history, future)) if a != b), len(history))
    tail = future[kept:]  # a generator never names a history item: a tail holding one is a perturbed history
    return len(tail) if tail and not set(tail) & set(history) else 0


def appended_items(history, future):
    """F's continuation: the items ``appended_count`` counts."""
    count = appended_count(history, future)
    return list(future[len(future) - count:]) if count else []


@dataclass
class ViewShape:
    """How many items each view changes (properties/augment.yaml's view_* keys)."""

    future_items: int = 3  # items appended in F
    swap_ratio: float = 0.3  # share of the window's items substituted in P (at least one)
    negative_items: int = 3  # last items replaced in N
    window: int = 8  # most recent history items the generator looks at; P's substitutions fall among them
    max_len: int = None  # items the model reads (MAX_ITEM_LIST_LENGTH; the anchor is the last max_len); None: all

    def counts(self, history_length):
        """(future, similar, negative) item counts for a history of this length."""
        shown = min(self.window, history_length)
        similar = max(1, round(self.swap_ratio * shown)) if self.swap_ratio > 0 else 0
        return self.future_items, min(similar, shown), min(self.negative_items, history_length)


def place_views(history, future, similar, unlike, window, rng, max_len=None):
    """The three views of one history, shaped so that the model reads what changed (the method's rule): each view
    holds the anchor's items at the anchor's positions and differs from it only where the generator changed it.
    The anchor is the history's last ``max_len`` items (None: all of it).
    P = history with ``similar`` substituted at random positions among its last ``window`` items (the items the
    generator looked at, inside the window the model reads); N = history with its last len(``unlike``) items
    replaced: as long as the anchor, read at the same position. F = history + ``future``, where that fits in the
    window; where it does not, F gives up the history's LAST items for the continuation, not its first: cutting
    the first would move every item the anchor and F share to another position. So a history filling the window
    gives an F as long as the anchor, read at the same position, different only in its last len(``future``) items."""
    history, future = list(history), list(future)[:max_len]
    read = min(len(history), max_len) if max_len else len(history)  # the anchor's length
    window = min(window, read)
    rephrase = list(history)
    positions = rng.choice(np.arange(len(history) - window, len(history)), min(len(similar), window), replace=False)
    for position, item in zip(sorted(positions), similar):
        rephrase[position] = item
    overflow = max(0, read + len(future) - max_len) if max_len else 0  # anchor items F's continuation displaces
    k = min(len(unlike), read)
    return ClientViews(history[: len(history) - overflow] + future, rephrase,
                       history[: len(history) - k] + list(unlike[:k]))


@dataclass
class Catalogue:
    """Public item side information, indexed by internal item id; texts[0] belongs to padding and is ''."""

    texts: list  # one short line per item, e.g. "Toy Story (1995) | Animation, Children's, Comedy"
    titles: list = field(default_factory=list)  # bare titles for exact matching, same indexing

    @property
    def num_items(self):
        return len(self.texts)


class ViewBuilder(ABC):
    """Builds the views of many clients; each client's views depend on its own history alone."""

    name = "abstract"
    redraws = False  # True: ``build(histories, round)`` gives fresh views each round (the trainer asks every round)

    @abstractmethod
    def build(self, histories):
        """histories: {client_or_user_id: [item ids, oldest first]} -> {same id: ClientViews}."""

    def stats(self):
        """Per-run statistics worth logging (counts, shares); empty by default."""
        return {}
