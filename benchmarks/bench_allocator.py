"""What keep_freed_memory (recbole_lumos/allocator.py) changes: time, kernel time, page faults and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_allocator.py

Each case runs twice in a fresh interpreter, with glibc's defaults and with keep_freed_memory() first:
  sasrec-steps  five training steps of RecBole's TransformerEncoder in SASRec's ml-100k shape (batch 2048 x 50
                positions, hidden 64, 2 layers, full softmax over 1,683 items), after one warm-up step
  fedsasrec     FedSASRec on ml-100k, 4 rounds (run() as the CLI calls it, data loading included)
Prints its figures; docs/speed.md records them with the machine they came from.
"""
import resource
import subprocess
import sys
import time


def sasrec_steps():
    import torch
    from recbole.model.layers import TransformerEncoder

    torch.manual_seed(0)
    items, batch, length, steps = 1683, 2048, 50, 5
    encoder = TransformerEncoder(n_layers=2, n_heads=2, hidden_size=64, inner_size=256, hidden_dropout_prob=0.5,
                                 attn_dropout_prob=0.5, hidden_act="gelu", layer_norm_eps=1e-12)
    embedding, position = torch.nn.Embedding(items, 64), torch.nn.Embedding(length, 64)
    optimizer = torch.optim.Adam([*encoder.parameters(), *embedding.parameters(), *position.parameters()], 1e-3)
    sequences, targets = torch.randint(1, items, (batch, length)), torch.randint(1, items, (batch,))
    causal = torch.where(torch.tril(torch.ones(length, length)).bool(), 0.0, -10000.0)[None, None]

    def step():
        hidden = encoder(embedding(sequences) + position(torch.arange(length)), causal)[-1][:, -1]
        loss = torch.nn.functional.cross_entropy(hidden @ embedding.weight.T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up: the first step allocates everything once either way
    return steps, step


def fedsasrec():
    from recbole_lumos.quick_start import run

    settings = {"epochs": 4, "show_progress": False, "state": "WARNING", "results_dir": "/tmp/bench-allocator"}
    return 1, lambda: run("FedSASRec", "ml-100k", config_dict=settings)


def child(case, mode):
    import recbole_lumos  # noqa: F401  (RecBole patched as in a run)
    from recbole_lumos.allocator import keep_freed_memory

    if mode == "keep":
        keep_freed_memory()
    repeats, work = {"sasrec-steps": sasrec_steps, "fedsasrec": fedsasrec}[case]()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        work()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    print(f"| {case} | {mode} | {wall / repeats:.2f} | {(after.ru_utime - before.ru_utime) / repeats:.2f} | "
          f"{(after.ru_stime - before.ru_stime) / repeats:.2f} | {(after.ru_minflt - before.ru_minflt) // repeats:,} | "
          f"{after.ru_maxrss // 1024:,} |", flush=True)


def main():
    print("| case | malloc | wall (s) | user (s) | kernel (s) | page faults | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for case in ("sasrec-steps", "fedsasrec"):
        for mode in ("default", "keep"):
            subprocess.run([sys.executable, __file__, "--child", case, mode], check=True)
    print("(per step for sasrec-steps, per run for fedsasrec)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
    else:
        main()
