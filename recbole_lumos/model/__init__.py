from recbole_lumos.model.baselines import CL4SRec, FedCL4SRec, FedSASRec
from recbole_lumos.model.lumos import LUMOS

MODELS = {cls.__name__: cls for cls in (LUMOS, FedSASRec, FedCL4SRec, CL4SRec)}
