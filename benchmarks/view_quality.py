"""How well the views fit each user's taste, and what noisy logs do to them (docs/view-quality.md).

    .venv/bin/python benchmarks/view_quality.py [--dataset=ml-100k] [--views=llm,embedding] [--ratios=0,0.1,0.2,0.3]
        [--users=0] [--<any config key>=<value>, e.g. --llm_complete_titles=True]

``--users=N``: the first N clients only (0: all), for trying a generator setting cheaply; other ``--key=value``
are run settings (checked like a run's).

For each noise ratio r, the histories are made noisy exactly as a run does (``attacks.add_noise``, seed
``view_seed``), their views are built (read from the view cache when a run made them: LLM views are not
regenerated here unless missing) and compared with the CLEAN history of the same client, training data only:
  * noise in window: share of the last ``view_window`` items (what the generator reads) that are random;
  * same as clean: share of the items a view names that the clean history's view names too;
  * genre fit: for each named item, the share of the clean window's items that share a genre with it (mean over
    items). F and P are meant to fit the user's taste (high), N to go against it (low); F - N is the margin the
    tri-view loss learns from. Two reference rows: random catalogue items, and each history's own last item
    against the window before it (what a real continuation scores).
Prints one table; docs/robustness/<dataset>.md quotes it with the command and the machine.
"""
import sys

import numpy as np
import yaml

import recbole_lumos  # noqa: F401
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lumos.augment import create_view_builder
from recbole_lumos.augment.settings import view_seed
from recbole_lumos.federated.attacks import add_noise
from recbole_lumos.quick_start import build_config

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from script_options import exit_on_help, parse_options  # noqa: E402

VIEWS = ("future", "rephrase", "counterfactual")
LETTER = {"future": "F", "rephrase": "P", "counterfactual": "N"}


def named_items(history, views):
    """The items each view put in: F's appended tail, P's substitutions, N's replaced tail."""
    n = len(history)
    rephrased = [v for h, v in zip(history, views.rephrase) if v != h]
    replaced = next((k for k in range(n + 1) if views.counterfactual[: n - k] == list(history[: n - k])), n)
    return {"future": views.future[n:], "rephrase": rephrased, "counterfactual": views.counterfactual[n - replaced:]}


def genre_sets(dataset, field):
    genres = dataset.item_feat[field].numpy()
    return [frozenset(int(g) for g in row if g) for row in genres.reshape(len(genres), -1)]


def genre_fit(items, window, genres):
    if not items or not window:
        return []
    return [np.mean([bool(genres[i] & genres[w]) for w in window]) for i in items]


def main(argv):
    exit_on_help(argv)  # before the filter below, which would pass it on as a run setting
    own = ("dataset", "views", "ratios", "users")
    options = parse_options([a for a in argv if a.lstrip("-").split("=")[0] in own],
                            {"dataset": "ml-100k", "views": "llm,embedding", "ratios": "0,0.1,0.2,0.3", "users": "0"})
    settings = {k: yaml.safe_load(v) for k, _, v in (a.lstrip("-").partition("=") for a in argv) if k not in own}
    ratios, users = [float(r) for r in options["ratios"].split(",")], int(options["users"])
    print(f"| views | r | noise in window | {' | '.join(f'{LETTER[v]} same as clean' for v in VIEWS)} | "
          f"{' | '.join(f'{LETTER[v]} genre fit' for v in VIEWS)} | F - N genre fit |")
    print("|" + "---|" * 10)
    for kind in options["views"].split(","):
        config = build_config("LUMOS", options["dataset"], config_dict={**settings, "views": kind, "state": "WARNING"})
        init_seed(config["seed"], True)
        train, _, _ = data_preparation(config, create_dataset(config))
        dataset = train._dataset
        clean = dataset.client_histories()
        clean = {u: clean[u] for u in sorted(clean)[:users or None]}
        genres = genre_sets(dataset, config["item_genre_field"])
        builder = create_view_builder(config, dataset)
        window = config["view_window_items"]
        clean_named = None
        if kind == options["views"].split(",")[0]:  # what the genre fit reads like for items of known kind
            rng = np.random.default_rng(0)
            random_fit = [f for h in clean.values() for f in genre_fit(
                rng.integers(1, dataset.item_num, size=3).tolist(), list(h[-window:]), genres)]
            next_fit = [f for h in clean.values() if len(h) > 1
                        for f in genre_fit([h[-1]], list(h[-window - 1:-1]), genres)]
            print(f"| (random catalogue items) | | | | | | {np.mean(random_fit):.3f} | | | |")
            print(f"| (the history's own last item, against the window before it) | | | | | | "
                  f"{np.mean(next_fit):.3f} | | | |")
        for r in ratios:
            histories = add_noise(clean, r, dataset.item_num, view_seed(config)) if r > 0 else clean
            views = builder.build(histories)
            named = {u: named_items(list(histories[u]), views[u]) for u in histories}
            clean_named = clean_named or named
            noisy_share = np.mean([np.mean(histories[u][-window:] != clean[u][-window:]) for u in histories])
            same, fit = {}, {}
            for v in VIEWS:
                pairs = [(set(named[u][v]), set(clean_named[u][v])) for u in histories if named[u][v]]
                same[v] = np.mean([len(a & b) / len(a) for a, b in pairs])
                fit[v] = np.mean([f for u in histories
                                  for f in genre_fit(named[u][v], list(clean[u][-window:]), genres)])
            print(f"| {kind} | {r:g} | {noisy_share:.3f} | {' | '.join(f'{same[v]:.3f}' for v in VIEWS)} | "
                  f"{' | '.join(f'{fit[v]:.3f}' for v in VIEWS)} | {fit['future'] - fit['counterfactual']:+.3f} |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
