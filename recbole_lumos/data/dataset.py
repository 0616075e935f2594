"""The LUMOS dataset: RecBole's SequentialDataset plus one training history per user.

Validation and test rows are RecBole's own (leave-one-out), so every model is evaluated on the same split.
For training, a client needs its user's whole training history, not RecBole's one-row-per-prefix explosion:
it is rebuilt from the TRAINING split alone (first prefix item + the training targets in order), so no
validation or test item can reach a client's loss or its views.
"""
import numpy as np
from recbole.data.dataset import SequentialDataset


class LUMOSDataset(SequentialDataset):
    def training_histories(self):
        """{internal user id: np.ndarray of item ids, oldest first}. Call it on the training split."""
        uid = self.inter_feat[self.uid_field].numpy()
        target = self.inter_feat[self.iid_field].numpy()
        length = self.inter_feat[self.item_list_length_field].numpy()
        first_item = self.inter_feat[self.item_id_list_field][:, 0].numpy()
        order = np.argsort(uid, kind="stable")  # RecBole keeps each user's rows in chronological order
        uid, target, length, first_item = uid[order], target[order], length[order], first_item[order]
        starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
        ends = np.r_[starts[1:], len(uid)]
        assert (length[starts] == 1).all(), "a user's first training row must be its first item"
        return {
            int(uid[s]): np.concatenate([[first_item[s]], target[s:e]]).astype(np.int64) for s, e in zip(starts, ends)
        }

    def client_histories(self):
        """The training histories that can train a client: at least two items (an input and a target)."""
        return {u: h for u, h in self.training_histories().items() if len(h) >= 2}
