"""The view-builder interface: what every generator of LUMOS views (random, embedding, LLM) implements.

A builder runs on a client. It receives that client's TRAINING history only (internal item ids, oldest
first) and returns three item-id sequences. Nothing in here ever sees validation or test items.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class ClientViews:
    """The three LUMOS views of one client's history, as internal item ids (0 is padding, never used)."""

    future: list  # F: history followed by predicted continuation items (positive)
    rephrase: list  # P: history with a share of items swapped for equivalent ones (positive)
    counterfactual: list  # N: items contrary to the user's preferences (negative)


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

    @abstractmethod
    def build(self, histories):
        """histories: {client_or_user_id: [item ids, oldest first]} -> {same id: ClientViews}."""

    def stats(self):
        """Per-run statistics worth logging (counts, shares); empty by default."""
        return {}
