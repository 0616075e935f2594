"""The privacy a DP-FedAvg run spends, by a maintained library's accountant (never a hand-written formula).

Each round is one Poisson-subsampled Gaussian mechanism on the clients: sampling rate q = client_fraction,
noise multiplier z = noise std / clip norm. Opacus's RDP accountant (Mironov et al., 2019) composes the rounds
and converts to (epsilon, delta).
"""
ACCOUNTANT = "opacus.accountants.RDPAccountant"


def epsilon(noise_multiplier, sample_rate, rounds, delta):
    """epsilon at ``delta`` after ``rounds`` rounds (0 rounds: nothing spent)."""
    if rounds == 0:
        return 0.0
    from opacus.accountants import RDPAccountant  # imported on use: only DP runs need it

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, rounds)]  # (z, q, steps): one entry per setting
    return float(accountant.get_epsilon(delta))


def noise_multiplier(target_epsilon, sample_rate, rounds, delta):
    """The noise multiplier z with which ``rounds`` rounds spend ``target_epsilon`` at ``delta`` (the library's
    search, to 0.01 in epsilon); a run stopped early spends less, and reports what it spent."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=rounds, accountant="rdp"))
