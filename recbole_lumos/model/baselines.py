"""FedSASRec, a baseline as a config of the LUMOS code: same backbone, same trainer, views switched off.

Its settings live in ``properties/model/FedSASRec.yaml`` on top of ``LUMOS.yaml``; the class exists so that
RecBole's name-based tools (``--model=FedSASRec``, ``load_data_and_model``) know it. CL4SRec and FedCL4SRec are
models of their own (``model/cl4srec.py``); LUMOS with random views is ``--model=LUMOS --views=random``.
"""
from recbole_lumos.model.lumos import LUMOS


class FedSASRec(LUMOS):
    """Federated SASRec: next-item loss only (tri_weight 0), parameter-isolated FedAvg."""
