"""Baselines as configs of the LUMOS code: same backbone, same trainer, views or federation switched off.

Their settings live in ``properties/model/<Name>.yaml`` on top of ``LUMOS.yaml``; the classes exist so that
RecBole's name-based tools (``--model=FedSASRec``, ``load_data_and_model``) know them.
"""
from recbole_lumos.model.lumos import LUMOS


class FedSASRec(LUMOS):
    """Federated SASRec: next-item loss only (tri_weight 0), parameter-isolated FedAvg."""


class FedCL4SRec(LUMOS):
    """Federated CL4SRec: random crop/mask/reorder views instead of LLM views."""


class CL4SRec(LUMOS):
    """Centralised CL4SRec (RecBole has none): random views, one model trained on all users' sequences."""
