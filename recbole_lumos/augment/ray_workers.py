"""View generation fanned out on Ray: each worker holds one LLM and generates whole batches.

The batches are cut before they are handed out, so every client is generated in the same batch as in a
single-process run: the views are the same whatever the number of workers. ``ray_address`` joins an existing
cluster; otherwise a local Ray starts with ``workers`` workers sharing this machine's cores (or GPUs).
"""
import os

from recbole_lumos.compat import require_ray


class ViewWorker:
    def __init__(self, builder, threads):
        import torch

        import recbole_lumos  # noqa: F401  (RecBole patches in this process too)

        torch.set_num_threads(threads)
        self.builder = builder

    def generate(self, batch):
        return self.builder.generate(batch)


def generate_on_ray(builder, batches, histories):
    """Yields (records, tokens) per batch as workers finish them."""
    require_ray("llm_workers > 1 (or ray_address)")
    import ray
    import torch

    if not ray.is_initialized():
        ray.init(address=builder.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    workers = max(1, builder.workers)
    gpu = builder.backend_options.get("device", "cpu").startswith("cuda") and torch.cuda.is_available()
    threads = max(1, (os.cpu_count() or 1) // workers)
    resources = {"num_gpus": 1 / workers} if gpu else {"num_cpus": threads}
    actors = [ray.remote(**resources)(ViewWorker).remote(builder, threads) for _ in range(workers)]
    queue, pending = list(batches), {}

    def hand_out(actor):
        if queue:
            batch = queue.pop(0)
            pending[actor.generate.remote({client: histories[client] for client in batch})] = actor

    for actor in actors:
        hand_out(actor)
    try:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done)
            hand_out(actor)
            yield ray.get(done)
    finally:
        for actor in actors:
            ray.kill(actor)
