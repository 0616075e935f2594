"""The view-quality gate: do a view set's items fit each user's taste, and how much do they vary?

Per view (F, P, N), from TRAINING data only:
  * genre fit: for each item a view put in (F's continuation, P's substitutions, N's replaced ending), the share of
    the user's last ``window`` training items that share a genre (or category) with it; the mean over all items.
    F and P are meant to fit the taste (high), N to go against it (low). Two reference rows: random catalogue
    items, and each history's own last item against the window before it (what a real continuation scores);
  * F - N: the genre-fit margin the tri-view loss can learn from;
  * distinct items: how many different items the view puts in, over all clients;
  * clients with items: the share of clients whose view puts in any item at all.
One HELD-OUT diagnostic, never used for training or for selecting anything: the share of users whose F names their
validation item (the item after their training history), beside lists of as many items made the same way: the most
popular items the user has not seen (popularity over the training histories), the embedding-space neighbours (the
embedding views' F) and, if given, a model's own top items. It says whether the views' continuation is a likely
future at all, not which setting to pick.

``view_gate`` computes it over plain data (histories, views, item genre sets); ``gate_of_run`` for the view sets a
run would use, from its settings; ``markdown`` prints gates as tables (benchmarks/view_quality.py prints them).
"""
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from recbole_lumos.augment.base import appended_items

VIEWS = ("future", "rephrase", "counterfactual")
LETTER = {"future": "F", "rephrase": "P", "counterfactual": "N"}
RANDOM_ITEMS, LAST_ITEM = "(random catalogue items)", "(the history's own last item, against the window before it)"


# ----------------------------------------------------------------------------------------- inputs from a dataset
def genre_sets(dataset, field):
    """Per internal item id, its set of genre (category) tokens: a token_seq field, or a token field (one each)."""
    genres = dataset.item_feat[field].numpy()
    return [frozenset(int(g) for g in row if g) for row in genres.reshape(len(genres), -1)]


def validation_items(dataset):
    """{user: its first validation item} of a validation split (RecBole's leave-one-out: the item right after the
    training history, i.e. the second-last item of the user's whole sequence)."""
    users = dataset.inter_feat[dataset.uid_field].numpy()
    items = dataset.inter_feat[dataset.iid_field].numpy()
    first = {}
    for user, item in zip(users.tolist(), items.tolist()):
        first.setdefault(user, item)
    return first


# ----------------------------------------------------------------------------------------- what a view put in
def named_items(history, views):
    """{view: the items it put in}: F's continuation, P's substitutions, N's replaced ending."""
    history = [int(i) for i in history]
    n = len(history)
    rephrase, counterfactual = [int(i) for i in views.rephrase], [int(i) for i in views.counterfactual]
    substituted = [v for h, v in zip(history, rephrase) if v != h]
    replaced = next((k for k in range(n + 1) if counterfactual[: n - k] == history[: n - k]), n)
    return {"future": [int(i) for i in appended_items(history, views.future)], "rephrase": substituted,
            "counterfactual": counterfactual[n - replaced:]}


# ----------------------------------------------------------------------------------------- measures
def genre_fit(items, window, genres):
    """Per item, the share of the window's items sharing a genre with it ([] without items or window)."""
    if not len(items) or not len(window):
        return []
    return [float(np.mean([bool(genres[i] & genres[w]) for w in window])) for i in items]


def popular_unseen(histories, m):
    """{user: the m items most frequent over all training histories that the user has not seen}."""
    ranked = [item for item, _ in Counter(int(i) for h in histories.values() for i in h).most_common()]
    out = {}
    for user, history in histories.items():
        seen = set(int(i) for i in history)
        out[user] = [item for item in ranked if item not in seen][:m]  # m of the top m + len(history) items
    return out


def top_unseen(scores, histories, m):
    """{user: the m highest-scoring items outside the user's history (and padding, id 0)}; scores[user] is a 1-D
    array over item ids (a model's scores, e.g. its full-sort prediction for the user's history)."""
    out = {}
    for user, history in histories.items():
        s = np.array(scores[user], dtype=float, copy=True)
        s[0], s[np.asarray(history, dtype=np.int64)] = -np.inf, -np.inf
        out[user] = np.argsort(-s, kind="stable")[:m].tolist()
    return out


def share_naming(lists, held_out):
    """The share of the held-out users whose list names their held-out item (0 for a user without a list)."""
    users = list(held_out)
    return float(np.mean([held_out[u] in set(lists.get(u, ())) for u in users])) if users else float("nan")


# ----------------------------------------------------------------------------------------- the gate
@dataclass
class Gate:
    """The gate of one view set. views: {"F"|"P"|"N": {measure: value}}; held_out: {list: share of users}."""

    views: dict
    margin: float  # F - N genre fit (nan without genres)
    taste_references: dict = field(default_factory=dict)  # {reference row: genre fit}
    held_out: dict = field(default_factory=dict)
    held_out_users: int = 0
    m: int = 0  # items per held-out reference list

    def markdown(self, name="views"):
        return markdown({name: self})


def view_gate(histories, views, genres=None, window=8, taste_histories=None, held_out=None, references=None, m=3,
              compare_to=None, seed=0):
    """The gate of one view set.

    histories: {user: training items, oldest first}, those the views were built from; views: {user: ClientViews};
    genres: per item id a set of genre tokens (``genre_sets``; None: no genre fit); window: recent items the fit
    reads; taste_histories: the histories the fit is measured against (default ``histories``; the clean ones when
    the views were built from noisy logs); held_out: {user: validation item} for the held-out diagnostic (None:
    none); references: {label: {user: items}} extra lists for it (the embedding views' F, a model's top items);
    m: items in the most-popular list; compare_to: {user: named_items} of other views of the same users (e.g.
    built from clean logs), adding each view's share of items those name too; seed: the random reference items."""
    taste = taste_histories or histories
    users = [u for u in histories if u in views]
    named = {u: named_items(histories[u], views[u]) for u in users}
    windows = {u: [int(i) for i in taste[u][-window:]] for u in users}
    rows = {}
    for view in VIEWS:
        items = [named[u][view] for u in users]
        row = {"genre fit": float("nan"),
               "distinct items": len({i for its in items for i in its}),
               "clients with items": float(np.mean([bool(its) for its in items])) if users else float("nan")}
        if genres is not None:
            fits = [f for u in users for f in genre_fit(named[u][view], windows[u], genres)]
            row["genre fit"] = float(np.mean(fits)) if fits else float("nan")
        if compare_to is not None:
            pairs = [(set(named[u][view]), set(compare_to[u][view]))
                     for u in users if named[u][view] and u in compare_to]
            row["same as clean"] = float(np.mean([len(a & b) / len(a) for a, b in pairs])) if pairs else float("nan")
        rows[LETTER[view]] = row
    gate = Gate(rows, rows["F"]["genre fit"] - rows["N"]["genre fit"], m=m)
    if genres is not None:
        rng = np.random.default_rng(seed)
        random_fit = [f for u in sorted(users) for f in genre_fit(
            rng.integers(1, len(genres), size=3).tolist(), windows[u], genres)]
        last_fit = [f for u in users if len(taste[u]) > 1
                    for f in genre_fit([int(taste[u][-1])], [int(i) for i in taste[u][-window - 1:-1]], genres)]
        gate.taste_references = {RANDOM_ITEMS: float(np.mean(random_fit)) if random_fit else float("nan"),
                                 LAST_ITEM: float(np.mean(last_fit)) if last_fit else float("nan")}
    if held_out:
        held_out = {u: item for u, item in held_out.items() if u in named}
        gate.held_out_users = len(held_out)
        futures = {u: named[u]["future"] for u in users}
        lists = {"F": futures, f"most popular unseen (top {m}, training popularity)": popular_unseen(histories, m),
                 **(references or {})}
        gate.held_out = {label: share_naming(items, held_out) for label, items in lists.items()}
    return gate


def view_futures(histories, views):
    """{user: F's continuation}: a view set's F as a held-out reference list (e.g. the embedding neighbours)."""
    return {u: named_items(histories[u], views[u])["future"] for u in histories if u in views}


def cached(cache, histories):
    """Whether a view cache holds every client of ``histories`` (a generator would make the others)."""
    records = cache.load()
    return all(cache.client_key(client, history) in records for client, history in histories.items())


def _cell(value, signed=False):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def markdown(gates):
    """Two markdown tables for {view set name: Gate}: the training-data gate, then the held-out diagnostic."""
    gates = dict(gates)
    extra = ["same as clean"] if any("same as clean" in g.views["F"] for g in gates.values()) else []
    measures = ["genre fit", "distinct items", "clients with items"] + extra
    header = [f"{letter} {measure}" for measure in measures for letter in "FPN"]
    lines = ["| views | " + " | ".join(header[:3]) + " | F - N | " + " | ".join(header[3:]) + " |",
             "|" + "---|" * (len(header) + 2)]
    references = next((g.taste_references for g in gates.values() if g.taste_references), {})
    for label, fit in references.items():
        lines.append(f"| {label} | {_cell(fit)} |" + " |" * (len(header)))
    for name, gate in gates.items():
        cells = [_cell(gate.views[letter].get(measure)) for measure in measures for letter in "FPN"]
        lines.append(f"| {name} | " + " | ".join(cells[:3]) + f" | {_cell(gate.margin, signed=True)} | "
                     + " | ".join(cells[3:]) + " |")
    held = {name: g for name, g in gates.items() if g.held_out}
    if held:
        users = next(iter(held.values())).held_out_users
        lines += ["", f"Held-out diagnostic, never used for training or for selecting anything: the share of the "
                      f"{users} users whose list names their validation item.", "",
                  "| list | users whose list names their validation item |", "|---|---|"]
        shown = set()
        for name, gate in held.items():
            lines.append(f"| {name} views' F | {_cell(gate.held_out['F'])} |")
        for gate in held.values():
            for label, share in gate.held_out.items():
                if label != "F" and label not in shown:
                    shown.add(label)
                    lines.append(f"| {label} | {_cell(share)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- a run's view sets
def gate_of_run(model, dataset, config_file_list=None, config_dict=None, kinds=None, users=0, model_top=None,
                compare_to=None, cached_only=False):
    """The gate of the views a run of ``model`` would use (or of each view set in ``kinds``: llm, embedding,
    random), built from its settings exactly as its clients build them (noisy logs included, measured against the
    clean training histories): ({kind: Gate}, {kind: {user: named_items}}), or None when the model trains without
    views. The LLM views are read from their cache (generated when missing, as the run would; ``cached_only``: a
    generator whose cache lacks any of the clients is left out). users: the first N clients only (0: all); model_top: {user:
    items} a model's own top items, for the held-out diagnostic; compare_to: {kind: {user: named_items}} from an
    earlier call (the clean logs' views), for 'same as clean'. Perturbed or aligned-prefix runs (views_perturb,
    tri_anchor: aligned_prefix) are gated on the views they move, as generated."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_lumos import registry
    from recbole_lumos.augment import create_view_builder
    from recbole_lumos.augment.settings import setting, view_seed
    from recbole_lumos.errors import LumosError
    from recbole_lumos.federated.attacks import add_noise
    from recbole_lumos.quick_start import build_config

    config = build_config(model, dataset, config_file_list, config_dict)
    if not getattr(registry.get_model(config["model"]), "needs_views", lambda c: False)(config):
        return None
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    data = train._dataset
    clean = data.client_histories()
    clean = {u: clean[u] for u in sorted(clean)[: users or None]}
    histories = clean
    if config["noise_ratio"] > 0:  # as the run's clients hold them (federated/client.py)
        histories = add_noise(clean, config["noise_ratio"], data.item_num, view_seed(config))
    field_name = config["item_genre_field"]
    genres = genre_sets(data, field_name) if field_name and field_name in data.item_feat.columns else None
    m, window = setting(config, "view_future_items"), setting(config, "view_window_items")
    held_out = validation_items(valid._dataset)
    views = {}
    for kind in kinds or [config["views"]]:
        config["views"] = kind
        builder = create_view_builder(config, data)  # an LLM that cannot load may fall back (views_fallback)
        if cached_only and hasattr(builder, "cache") and not cached(builder.cache(), histories):
            continue
        views[builder.name] = builder.build(histories)
    references = {f"model's top {m}": model_top} if model_top else {}
    if "embedding" not in views:  # else its own F row is this reference
        try:  # the embedding neighbours, where the items have text
            config["views"] = "embedding"
            references["embedding neighbours (embedding views' F)"] = view_futures(
                histories, create_view_builder(config, data).build(histories))
        except (LumosError, ImportError, OSError):  # no item text or no encoder: the diagnostic goes without them
            pass
    gates, named = {}, {}
    for kind, kind_views in views.items():
        named[kind] = {u: named_items(histories[u], kind_views[u]) for u in histories}
        gates[kind] = view_gate(histories, kind_views, genres, window, clean, held_out, references, m,
                                (compare_to or {}).get(kind), seed=0)
    return gates, named
