"""Where the time of a LUMOS round goes, against a FedSASRec round with the same clients per round and cohort size.

    OMP_NUM_THREADS=1 python benchmarks/profile_round.py --dataset=amazon-office --raw_data_path=/work/shared/datasets
    OMP_NUM_THREADS=1 python benchmarks/profile_round.py --dataset=amazon-beauty-text --raw_data_path=... --rounds=5

Settings: LUMOS's tuned ones (``--tuned``, default docs/tune/LUMOS-<dataset>-best.yaml, else amazon-office's) with
``views: embedding`` (the view items change no cost, only the views' shapes, which the LLM views share); FedSASRec
its own tuned ones (docs/tune/FedSASRec-..., likewise) with LUMOS's client_fraction and cohort_size. One thread.
LUMOS runs each of ``--paths``:
  fast   each anchor encoded once, its windows and views read off it, one pool of negatives per cohort (default)
  plain  every sequence encoded whole, each anchor its own negatives (the code before the fast path)
  fast_own_negatives   the fast encoding with each anchor's own negatives
The rounds of every model and path alternate (round r of each, then r + 1), so that a busy machine slows all alike.
Prints (markdown; ``--output`` writes it to a file too):
  1. seconds per round: median of ``--rounds`` rounds after ``--warmup``;
  2. where a round's time goes: timers around the client side's steps (exclusive: a step's time without the
     timed steps it calls), mean of ``--profile_rounds`` further rounds; "other" is the round's time no timer saw
     (Python bookkeeping, the private bank, client sampling);
  3. the forward time of each kind of sequence, encoded on its own on one round's cohorts (with autograd
     recording, dropout on, as in training): where the plain path encodes them in one batch, an attribution.
"""
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

import recbole_lumos  # noqa: F401  (patches RecBole)
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_lumos.federated.client as client_module
from recbole_lumos import registry
from recbole_lumos.quick_start import build_config
from script_options import parse_options, print_report  # benchmarks/

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {"dataset": "amazon-office", "raw_data_path": "", "tuned": "", "views": "embedding", "rounds": "10",
            "warmup": "1", "profile_rounds": "3", "paths": "fast,plain", "threads": "1", "output": ""}
PATHS = {"plain": (False, False), "fast": (True, True), "fast_own_negatives": (True, False)}  # fast_views, shared


def tuned_settings(model, dataset, path=""):
    """A model's tuned settings for the dataset (amazon-office's where the dataset has none)."""
    folder = ROOT / "docs" / "tune"
    file = Path(path) if path else folder / f"{model}-{dataset}-best.yaml"
    if not file.is_file():
        file = folder / f"{model}-amazon-office-best.yaml"
    with open(file) as f:
        return yaml.safe_load(f), file


def build_trainer(model_name, dataset, settings):
    config = build_config(model_name, dataset, config_dict={"show_progress": False, "state": "WARNING", **settings})
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = registry.get_model(model_name)(config, train._dataset)
    trainer = registry.get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    trainer.setup(train._dataset)
    return trainer


class Run:
    """One model (and, for LUMOS, one encoding path) on its trainer."""

    def __init__(self, name, trainer, path=None):
        self.name, self.trainer, self.path = name, trainer, path

    def select(self):
        if self.path is not None:
            fast, shared = PATHS[self.path]
            self.trainer.model.fast_views = fast
            self.trainer.clients.share_negatives = shared

    def round(self, round_idx):
        self.select()
        seed = self.trainer.config["seed"] * 1_000_003 + round_idx  # as FederatedTrainer.fit seeds a round
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.trainer.model.train()
        start = time.perf_counter()
        self.trainer.train_round(round_idx, generator)
        return time.perf_counter() - start


class Timers:
    """Exclusive wall time per label: a timed call's time less that of the timed calls inside it."""

    def __init__(self):
        self.totals, self.stack, self.restore = defaultdict(float), [], []

    @contextmanager
    def span(self, label):
        frame = [label, 0.0]
        self.stack.append(frame)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stack.pop()
            self.totals[label] += elapsed - frame[1]
            if self.stack:
                self.stack[-1][1] += elapsed

    def parent(self):
        return self.stack[-1][0] if self.stack else "-"

    def timed(self, function, label):
        def call(*args, **kwargs):
            with self.span(label(self) if callable(label) else label):
                return function(*args, **kwargs)
        return call

    def wrap(self, owner, attribute, label):
        """Time owner.attribute (an instance's method or a module's function) if it exists."""
        if not hasattr(owner, attribute):
            return
        had_own = attribute in getattr(owner, "__dict__", {})
        original = getattr(owner, attribute)
        setattr(owner, attribute, self.timed(original, label))
        self.restore.append((owner, attribute, original if had_own else None))

    def unwrap(self):
        for owner, attribute, original in reversed(self.restore):
            if original is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)
        self.restore = []


ENCODE_LABELS = {"next-item loss: logits, CE": "encode: next-item windows",
                 "views, plain: stack, last states": "encode: anchor, F, P, N, negatives (one batch)",
                 "negatives: read the pool": "encode: negatives (pool, or each anchor's)",
                 "next-item loss off the anchors: logits, CE": "encode: windows that are not their anchor"}


def instrument(timers, run):
    model, clients, server = run.trainer.model, run.trainer.clients, run.trainer.server
    timers.wrap(clients.data, "batch_of_users", "data: gather the cohort's tensors")
    timers.wrap(clients, "with_negatives", "data: anchors, negatives, to device")
    timers.wrap(model, "encode", lambda t: ENCODE_LABELS.get(t.parent(), f"encode ({t.parent()})"))
    timers.wrap(model, "next_item_loss", "next-item loss: logits, CE")
    timers.wrap(model, "encode_views", "views, plain: stack, last states")
    timers.wrap(model, "cohort_encoding", "fast: splice, last states")
    timers.wrap(model, "encode_cached", "encode: anchor (keeping keys, values)")
    timers.wrap(model, "encode_on_prefix", "encode: F, P, N after their shared prefix")
    timers.wrap(model, "next_item_loss_on_anchors", "next-item loss off the anchors: logits, CE")
    timers.wrap(model, "negative_states", "negatives: read the pool")
    timers.wrap(model, "tri_view_loss_of_states", "tri-view loss")
    timers.wrap(model, "future_item_losses", "future loss")
    vmap = client_module.vmap  # the per-client heads: the function vmap returns is what runs them
    client_module.vmap = lambda *a, **k: timers.timed(vmap(*a, **k), "projection: per-client heads (vmap)")
    timers.restore.append((client_module, "vmap", vmap))
    timers.wrap(client_module, "cohort_objective", "objective: the rest (weights, sums)")
    timers.wrap(torch.autograd, "grad", "backward (torch.autograd.grad)")
    timers.wrap(clients.trainer, "summed_update", "summed update: heads, deltas")
    for name in ("broadcast", "receive", "apply"):
        timers.wrap(server, name, "server: aggregate, optimizer step")


def profile_rounds(run, rounds):
    """Mean exclusive seconds per round of each timed step, and 'other'."""
    timers = Timers()
    instrument(timers, run)
    total = 0.0
    try:
        for round_idx in rounds:
            total += run.round(round_idx)
    finally:
        timers.unwrap()
    parts = {k: v / len(rounds) for k, v in timers.totals.items()}
    parts["other (Python, bookkeeping, sampling)"] = total / len(rounds) - sum(parts.values())
    return parts, total / len(rounds)


def captured_batches(run, round_idx):
    """The device batches of one round's cohorts (the round is trained as usual)."""
    batches, clients = [], run.trainer.clients
    with_negatives = clients.with_negatives
    clients.with_negatives = lambda *args: batches.append(with_negatives(*args)) or batches[-1]
    try:
        run.round(round_idx)
    finally:
        del clients.with_negatives
    return batches


def timed_forward(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def sequence_costs(model, batches):
    """{kind: (rows, positions, forward seconds per round)} of each kind of sequence encoded on its own."""
    costs = defaultdict(lambda: [0, 0, 0.0])

    def add(kind, rows, positions, function):
        cost = costs[kind]
        cost[0] += rows
        cost[1] += positions
        cost[2] += timed_forward(function)

    model.train()
    fast = hasattr(model, "encode_cached")
    for batch in batches:
        windows, anchor, views, negatives = batch["windows"], batch["anchor"], batch["views"], batch["negatives"]
        U, K, L = negatives.shape
        add("plain: next-item windows", len(windows), windows[:, :-1].numel(), lambda: model.encode(windows[:, :-1]))
        add("plain: anchor", U, anchor.numel(), lambda: model.encode(anchor))
        for index, name in enumerate("FPN"):
            add(f"plain: {name}", U, anchor.numel(), lambda: model.encode(views[:, index]))
        add("plain: negatives, each anchor's", U * K, U * K * L, lambda: model.encode(negatives.reshape(U * K, L)))
        if not fast:
            continue
        from recbole_lumos.model.sequences import shared_prefix  # the fast path's

        add("fast: anchor, keeping keys and values", U, anchor.numel(), lambda: model.encode_cached(anchor))
        _, caches = model.encode_cached(anchor)
        for index, name in enumerate("FPN"):
            view = views[:, index]
            shared = shared_prefix(view, anchor)
            suffix = int(((view > 0).sum(-1) - shared).max())
            every = index == 0 and bool(model.future_weight)  # as cohort_encoding: F whole for L_future
            add(f"fast: {name} after its shared prefix", U, U * suffix,
                lambda: model.encode_on_prefix(view, shared, caches, last_only=not every))
        pool = batch.get("negative_pool")
        if pool is None:
            pool = negatives[0]  # a pool's shape, for its cost
        add("fast: negatives, one pool", K, pool.numel(), lambda: model.encode(pool))
        own = anchor[batch["window_anchor"]]
        width = min(windows.size(1), own.size(1))
        same = ((windows > 0).sum(-1) == (own > 0).sum(-1)) & (windows[:, :width] == own[:, :width]).all(-1)
        rest = windows[~same][:, :-1]
        if len(rest):
            add("fast: next-item windows that are not their anchor", len(rest), rest.numel(),
                lambda: model.encode(rest))
    return costs


def machine():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return f"{name}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {' '.join(load)}"


def main(argv):
    options = parse_options(argv, DEFAULTS)
    torch.set_num_threads(int(options["threads"]))
    dataset = options["dataset"]
    lumos_settings, lumos_file = tuned_settings("LUMOS", dataset, options["tuned"])
    fed_settings, fed_file = tuned_settings("FedSASRec", dataset)
    common = {"views": options["views"], "eval_step": 10**6}
    if options["raw_data_path"]:
        common["raw_data_path"] = options["raw_data_path"]
    lumos_settings = {**lumos_settings, **common}
    same = {k: lumos_settings[k] for k in ("client_fraction", "cohort_size") if k in lumos_settings}
    fed_settings = {**fed_settings, **common, **same}
    lines = [f"# A LUMOS round against a FedSASRec round: {dataset}", "",
             f"{machine()}; started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"LUMOS: {lumos_file.relative_to(ROOT) if lumos_file.is_relative_to(ROOT) else lumos_file} + views "
             f"{options['views']}; FedSASRec: "
             f"{fed_file.relative_to(ROOT) if fed_file.is_relative_to(ROOT) else fed_file} + {same}", ""]
    print("\n".join(lines), flush=True)

    start = time.perf_counter()
    fed = build_trainer("FedSASRec", dataset, fed_settings)
    lumos = build_trainer("LUMOS", dataset, lumos_settings)
    print(f"setup (data, views, clients): {time.perf_counter() - start:.1f} s", flush=True)
    has_fast = hasattr(lumos.model, "fast_views")
    paths = [p for p in options["paths"].split(",") if p] if has_fast else [None]
    runs = [Run("FedSASRec", fed)] + [Run("LUMOS", lumos, path) for path in paths]
    label = {id(r): r.name + (f" ({r.path})" if r.path else "") for r in runs}
    lines += [f"clients per round: {lumos.server.per_round} of {lumos.clients.num_clients} (client_fraction "
              f"{lumos.config['client_fraction']}), cohort_size {lumos.config['cohort_size']}, "
              f"tri_extra_negatives {lumos.config['tri_extra_negatives']}", ""]

    warmup, count = int(options["warmup"]), int(options["rounds"])
    times = defaultdict(list)
    for round_idx in range(warmup + count):
        for run in runs:
            seconds = run.round(round_idx)
            if round_idx >= warmup:
                times[id(run)].append(seconds)
        print(f"round {round_idx}: " + ", ".join(f"{label[id(r)]} {times[id(r)][-1] if times[id(r)] else 0:.3f} s"
                                                 for r in runs), flush=True)
    base = statistics.median(times[id(runs[0])])
    lines += ["## Seconds per round", "", "| model | median s/round | min - max | / FedSASRec |", "|---|---|---|---|"]
    for run in runs:
        t = times[id(run)]
        lines.append(f"| {label[id(run)]} | {statistics.median(t):.3f} | {min(t):.3f} - {max(t):.3f} | "
                     f"{statistics.median(t) / base:.2f} |")
    lines += ["", f"({count} rounds each after {warmup} warm-up, alternating)", ""]
    print("\n".join(lines), flush=True)

    profiles = {}
    first = warmup + count
    rounds = list(range(first, first + int(options["profile_rounds"])))
    for run in runs:
        profiles[id(run)] = profile_rounds(run, rounds)
    parts = []
    for run in runs:
        parts += [p for p in profiles[id(run)][0] if p not in parts]
    parts = sorted(parts, key=lambda p: (p.startswith("other"), p))
    lines += ["## Where a round's time goes (seconds per round, exclusive)", "",
              "| step | " + " | ".join(label[id(r)] for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for part in parts:
        lines.append(f"| {part} | " + " | ".join(
            f"{profiles[id(r)][0][part]:.3f}" if part in profiles[id(r)][0] else "" for r in runs) + " |")
    lines.append("| **round (timed)** | " + " | ".join(f"**{profiles[id(r)][1]:.3f}**" for r in runs) + " |")
    lines += ["", f"(mean of rounds {rounds[0]}-{rounds[-1]}, timers on)", ""]
    print("\n".join(lines[-len(parts) - 7:]), flush=True)

    lumos_runs = [r for r in runs if r.name == "LUMOS"]
    lumos_runs[0].select()
    batches = captured_batches(lumos_runs[0], rounds[-1] + 1)
    costs = sequence_costs(lumos.model, batches)
    lines += [f"## Forward time of each kind of sequence, encoded on its own ({len(batches)} cohorts of one round)",
              "", "| sequences | rows | positions | forward s/round |", "|---|---|---|---|"]
    for kind, (rows, positions, seconds) in costs.items():
        lines.append(f"| {kind} | {rows:,} | {positions:,} | {seconds:.3f} |")
    lines.append("")
    print_report("\n".join(lines), options["output"])


if __name__ == "__main__":
    main(sys.argv[1:])
