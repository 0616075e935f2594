import sys

import recbole.model.sequential_recommender as recbole_sequential

from recbole_lumos.model import cl4srec
from recbole_lumos.model.baselines import FedSASRec
from recbole_lumos.model.cl4srec import CL4SRec, FedCL4SRec
from recbole_lumos.model.lumos import LUMOS
from recbole_lumos.registry import register_model

for _model in (LUMOS, FedSASRec, FedCL4SRec):  # trained by the plugin's federated trainer
    register_model(_model)

# CL4SRec is a plain RecBole model (RecBole's Trainer and SequentialDataset, not registered): it is found where
# RecBole's own get_model looks for its models, recbole.model.sequential_recommender.<name in lower case>
sys.modules.setdefault("recbole.model.sequential_recommender.cl4srec", cl4srec)
recbole_sequential.CL4SRec = CL4SRec
