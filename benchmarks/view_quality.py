"""The view-quality gate of a dataset's view sets (recbole_lumos/augment/quality.py; docs/view-quality.md).

    .venv/bin/python benchmarks/view_quality.py [--dataset=ml-100k] [--views=llm,embedding,random] [--ratios=0]
        [--users=0] [--<any config key>=<value>, e.g. --llm_shortlist=50]

Prints, per view set, the gate on training data (genre fit of F, P and N to the user's recent training items, the
F - N margin, distinct items, the share of clients whose view has any item; two reference rows) and the held-out
diagnostic (the share of users whose F names their validation item, beside the most popular unseen items and the
embedding neighbours), which is never used for training or for selecting anything.

``--views``: llm views are read from the view cache a run made, and left out (with a note) when there is none:
nothing is generated here; embedding and random views cost seconds. ``--ratios=0,0.1,...``: noisy logs, made as a
run makes them (``noise_ratio``), each view set built from them and measured against the clean training window,
with 'same as clean' (the share of a view's items that the clean logs' view names too). ``--users=N``: the first N
clients only (0: all). Other ``--key=value`` are run settings (checked like a run's).
"""
import sys

import yaml

import recbole_lumos  # noqa: F401
from recbole_lumos.augment.quality import gate_of_run, markdown

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from script_options import exit_on_help, parse_options  # noqa: E402

OWN = {"dataset": "ml-100k", "views": "llm,embedding,random", "ratios": "0", "users": "0"}


def main(argv):
    exit_on_help(argv)  # before the filter below, which would pass it on as a run setting
    options = parse_options([a for a in argv if a.lstrip("-").split("=")[0] in OWN], OWN)
    settings = {k: yaml.safe_load(v) for k, _, v in (a.lstrip("-").partition("=") for a in argv) if k not in OWN}
    kinds, ratios = options["views"].split(","), [float(r) for r in options["ratios"].split(",")]
    gates, clean = {}, None
    for r in ratios:
        found, named = gate_of_run("LUMOS", options["dataset"], config_dict={**settings, "noise_ratio": r,
                                                                             "state": "WARNING"},
                                   kinds=kinds, users=int(options["users"]), compare_to=clean, cached_only=True)
        clean = clean or (named if r == 0 else None)  # 'same as clean' needs the clean logs' views first
        gates.update({(kind if len(ratios) == 1 else f"{kind}, r = {r:g}"): gate for kind, gate in found.items()})
        for kind in kinds:
            if kind not in found:
                noise = f" --noise_ratio={r:g}" if r else ""
                print(f"note: no cached {kind} views for these settings (r = {r:g}): left out; a run with "
                      f"--views={kind}{noise} and the same settings makes them", file=sys.stderr)
    if gates:
        print(markdown(gates))


if __name__ == "__main__":
    main(sys.argv[1:])
