"""Markdown table of run_lumos.py result files: one row per file, in the order given.

    .venv/bin/python benchmarks/results_table.py results/ml-100k/LUMOS-seed2020-*.json ...
"""
import json
import sys

METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20")


def row(path):
    record = json.load(open(path))
    config = record["config"]
    name = record["model"] + (f" ({config['views']} views)" if config.get("tri_weight") else "")
    test = " | ".join(f"{record['test_result'][m]:.4f}" for m in METRICS)
    valid = record["best_valid_result"].get("ndcg@20", float("nan"))
    return (f"| {name} | {test} | {valid:.4f} | {record['wall_time_s']:.0f} | "
            f"{record.get('time_to_best_s', float('nan')):.0f} "
            f"| {record['peak_memory_mb']:.0f} |")


if __name__ == "__main__":
    print("| model | test HR@10 | HR@20 | NDCG@10 | NDCG@20 | best valid NDCG@20 "
          "| wall s | s to best valid | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        print(row(path))
