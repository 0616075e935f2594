"""Every client's training tensors, laid out once so that a cohort of clients is gathered with one index.

A user's training history becomes windows of L+1 items (stride L from the most recent end, so each training
target is predicted exactly once), an anchor (its last L items), its three views (last L items of each) and the
count of items its F appends (the continuation L_future reads).
Row 0 of every table is all padding: cohorts pad their clients to the same number of windows/users with it.
A cohort's tensors come out cut to its longest row, and cohorts group clients of similar history lengths.
"""
import itertools

import numpy as np
import torch

from recbole_lumos.augment.base import appended_count
from recbole_lumos.model.sequences import right_pad, trim_padding


def windows_of(history, max_len):
    """Windows [k, L+1] covering every target of the history once, most recent window last."""
    ends = range(len(history), 1, -max_len)
    return [history[max(0, end - max_len - 1) : end] for end in ends][::-1]


class ClientData:
    def __init__(self, histories, clients, views, max_len):
        """histories {user: items}; clients [array of users]; views {user: ClientViews} or None."""
        users = sorted(histories)
        user_row = {user: row + 1 for row, user in enumerate(users)}
        windows, user_windows, window_user = [np.zeros(max_len + 1, dtype=np.int64)], {}, [0]
        for user in users:
            own = right_pad(windows_of(histories[user], max_len), max_len + 1)
            user_windows[user] = np.arange(len(windows), len(windows) + len(own))
            windows.extend(own)
            window_user.extend([user_row[user]] * len(own))
        self.windows = torch.from_numpy(np.stack(windows))
        self.window_user = torch.tensor(window_user)  # each window's user's row of the user tables
        self.anchor = torch.from_numpy(right_pad([[]] + [histories[u] for u in users], max_len))
        self.max_len, self.user_row = max_len, user_row
        self.histories, self.clients = histories, clients  # user ids per client
        self.views = torch.zeros(len(users) + 1, 3, max_len, dtype=torch.long)
        self.future_count = torch.zeros(len(users) + 1, dtype=torch.long)  # items each F appends to its history
        if views:
            self.set_views(views)
        self.client_users = [np.array([user_row[u] for u in client]) for client in clients]
        self.client_windows = [np.concatenate([user_windows[u] for u in client]) for client in clients]
        self.client_length = [max(min(len(histories[u]), max_len) for u in client) for client in clients]
        self.num_samples = torch.tensor([float((self.windows[w, 1:] > 0).sum()) for w in self.client_windows])

    def set_views(self, views):
        """Replace the views of these users ({user: ClientViews}); the others keep theirs. Views placed on another
        anchor than the whole history (ClientViews.anchor) replace the user's anchor too."""
        users = list(views)
        rows = [[views[u].future, views[u].rephrase, views[u].counterfactual] for u in users]
        padded = torch.from_numpy(right_pad([v for row in rows for v in row], self.max_len)).view(-1, 3, self.max_len)
        index = [self.user_row[u] for u in users]
        self.views[index] = padded
        anchors = [self.histories[u] if views[u].anchor is None else views[u].anchor for u in users]
        self.anchor[index] = torch.from_numpy(right_pad(anchors, self.max_len))
        self.future_count[index] = torch.tensor([appended_count(a, views[u].future) for a, u in zip(anchors, users)])

    @property
    def num_clients(self):
        return len(self.client_users)

    @staticmethod
    def _pad_index(lists):
        index = np.zeros((len(lists), max(len(x) for x in lists)), dtype=np.int64)
        for row, values in enumerate(lists):
            index[row, : len(values)] = values
        return torch.from_numpy(index)

    def cohort(self, client_ids):
        """Stacked tensors of several clients: windows [C, W, L+1], anchor [C, U, L], views [C, U, 3, L]."""
        window_index = self._pad_index([self.client_windows[c] for c in client_ids])
        user_index = self._pad_index([self.client_users[c] for c in client_ids])
        return {**self._trimmed(self.windows[window_index], self.anchor[user_index], self.views[user_index]),
                "future_count": self.future_count[user_index]}

    def batch_of_users(self, client_ids):
        """All windows and users of these clients in one flat batch; owner: each user's position in client_ids;
        window_anchor: each window's user's position in the batch's users; window_owner: each window's client's."""
        windows = torch.from_numpy(np.concatenate([self.client_windows[c] for c in client_ids]))
        users = torch.from_numpy(np.concatenate([self.client_users[c] for c in client_ids]))
        owner = torch.cat([torch.full((len(self.client_users[c]),), k) for k, c in enumerate(client_ids)])
        position = torch.zeros(len(self.anchor), dtype=torch.long)
        position[users] = torch.arange(len(users))
        window_anchor = position[self.window_user[windows]]
        return {**self._trimmed(self.windows[windows], self.anchor[users], self.views[users]), "owner": owner,
                "future_count": self.future_count[users], "window_anchor": window_anchor,
                "window_owner": owner[window_anchor]}

    @staticmethod
    def _trimmed(windows, anchor, views):
        """The batch without the padding columns no row uses: windows on their own (an input and a target column
        at least), anchor and views together (the tri-view loss encodes them as one batch)."""
        (windows,), (anchor, views) = trim_padding(windows, min_width=2), trim_padding(anchor, views)
        return {"windows": windows, "anchor": anchor, "views": views}

    def cohorts(self, client_ids, cohort_size, stacked):
        """client_ids in groups of at most cohort_size, smallest clients first (then shortest histories, so that a
        group's batch is cut to its own length). stacked: the group will be ``cohort``-stacked, every client padded
        to the group's largest, so a group holds one window count only."""
        ordered = sorted(client_ids, key=lambda c: (len(self.client_windows[c]), len(self.client_users[c]),
                                                    self.client_length[c]))
        groups = [ordered]
        if stacked:
            groups = [list(group) for _, group in itertools.groupby(ordered, key=lambda c: len(self.client_windows[c]))]
        return [group[i : i + cohort_size] for group in groups for i in range(0, len(group), cohort_size)]
