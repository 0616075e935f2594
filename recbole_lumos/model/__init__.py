from recbole_lumos.model.baselines import CL4SRec, FedCL4SRec, FedSASRec
from recbole_lumos.model.lumos import LUMOS
from recbole_lumos.registry import register_model

for _model in (LUMOS, FedSASRec, FedCL4SRec, CL4SRec):
    register_model(_model)
