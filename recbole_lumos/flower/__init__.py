"""``engine: flower``: the same federated rounds, run through Flower (flwr 1.42, its Message API).

Flower's own split, one module each:
  * ``strategy.py``: the server side of a round. Our ``Server`` samples the clients, aggregates their replies
    and takes the server-optimizer step, so FedAdam, the robust rules and DP-FedAvg behave as in-process.
  * ``client_app.py``: the client side. One client's local update, by our client code; its private head lives in
    the ClientApp's ``Context.state`` on its SuperNode and goes into no message.
  * ``engine.py``: ``FlowerTrainer``, the in-process trainer (rounds, RecBole's evaluation, early stopping,
    logging) whose rounds go through Flower's simulation engine, on this machine or on a Ray cluster.
The model knows neither: it is the same ``LUMOS`` (or FedSASRec, ...) as in-process.

Flower is optional: ``pip install "recbole-lumos[flower]"`` (Python 3.11+, as flwr requires); nothing here
imports it until a Flower run starts.
"""
from recbole_lumos.errors import LumosError

FLWR_REQUIREMENT = "flwr[simulation]==1.42.*"


def require_flwr():
    """flwr 1.42 (its Message API: ServerApp, ClientApp, Strategy.configure_train/aggregate_train)."""
    try:
        import flwr

        found = flwr.__version__
    except ImportError:
        found = None
    if found is None or not found.startswith("1.42."):
        raise LumosError(f"engine flower needs flwr 1.42 (found {found or 'none'}): "
                         f"pip install \"{FLWR_REQUIREMENT}\" (Python 3.11+)")
