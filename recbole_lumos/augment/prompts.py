"""Prompts for the three views (properties/prompts/*.yaml) and the parsing of the LLM's answer.

Item text is untrusted: a title may hold newlines, chat-template markers, "NEXT:" lines or thousands of characters.
Every item becomes ONE quoted line made of word characters and plain punctuation, truncated; the answer is parsed
line by line and anything unparsable is just dropped (the builder fills the gap and counts it).
"""
import re
import unicodedata
from pathlib import Path

import torch
import yaml
from transformers import LogitsProcessor

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "properties" / "prompts" / "views.yaml"
MAX_TITLE_CHARS, MAX_DETAIL_CHARS, MAX_CANDIDATE_CHARS = 80, 60, 120
TOKENS_PER_ITEM = 10  # a section longer than this per asked item is rambling: cut it
UNSAFE = re.compile(r"[^\w .,'!?&:()\-/]+")  # drops newlines, quotes, ";", "|", "<|im_end|>", braces, markup
BULLET = re.compile(r"^\s*(?:[-*•]+|\d+\s*[.)])\s*")
TRAILER = re.compile(r"\s*(?:\(\s*\d{4}.*|\|.*)$")  # "(1995) | Comedy" after a title


def sanitise(text, max_chars):
    text = " ".join(UNSAFE.sub(" ", unicodedata.normalize("NFKC", str(text))).split())
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + "..."


def natural_title(title):
    """'Usual Suspects, The' -> 'The Usual Suspects' (how people, and LLMs, write titles)."""
    match = re.match(r"^(.*), (The|A|An)$", title.strip(), re.I)
    return f"{match.group(2)} {match.group(1)}" if match else title


def item_line(text, title=None):
    """One prompt line for an item: its quoted title then year and genres, e.g. '- "Alien" (1979) Horror, Sci-Fi'."""
    title = title if title is not None else TRAILER.sub("", text)
    detail = text[len(title):] if text.startswith(title) else ""
    line = f'- "{sanitise(natural_title(title), MAX_TITLE_CHARS)}"'
    detail = sanitise(detail, MAX_DETAIL_CHARS)
    return f"{line} {detail}" if detail else line


def clean_candidate(text):
    """A title named by the LLM, without quotes, bullets, year or genres; '' when nothing title-like is left."""
    text = TRAILER.sub("", BULLET.sub("", text)).strip(" \t\"'`*.,")
    return text[:MAX_CANDIDATE_CHARS] if re.search(r"\w", text) else ""


class PromptBook:
    def __init__(self, path=None):
        self.text = Path(path or DEFAULT_PROMPTS).read_text(encoding="utf-8")
        spec = yaml.safe_load(self.text)
        self.system, self.user, self.labels = spec["system"], spec["user"], spec["labels"]
        self.prefix = f"{next(iter(self.labels))}:"  # the answer's first label, written for the model
        self.view_of = {label.lower(): view for label, view in self.labels.items()}
        self.label_re = re.compile(r"^\W*(%s)\W*?[:=-]" % "|".join(map(re.escape, self.labels)), re.I)
        self.shots = []
        for example in spec.get("examples") or []:
            counts = {view: len(items or []) for view, items in self.parse(example["answer"]).items()}
            lines = [item_line(text) for text in example["history"]]
            self.shots += [{"role": "user", "content": self._user(lines, **counts)},
                           {"role": "assistant", "content": example["answer"].strip()}]

    def _user(self, lines, future=0, rephrase=0, counterfactual=0):
        return self.user.format(history="\n".join(lines), n_future=future, n_similar=rephrase,
                                n_negative=counterfactual)

    def messages(self, items, n_future, n_similar, n_negative):
        """items: [(catalogue text, bare title)] oldest first -> chat messages (system, few-shot, request)."""
        request = self._user([item_line(text, title) for text, title in items], n_future, n_similar, n_negative)
        return [{"role": "system", "content": self.system}, *self.shots, {"role": "user", "content": request}]

    def shaper(self, tokenizer, limits):
        """A logits processor keeping each row's answer in the labelled-lines shape (see AnswerShaper)."""
        return AnswerShaper(tokenizer, [f"\n{label}:" for label in list(self.labels)[1:]], limits)

    def parse(self, answer):
        """LLM answer -> {view: [candidate titles]} for each labelled line found (a missing view is absent)."""
        found, view = {}, None
        for line in str(answer).splitlines():
            match = self.label_re.match(line)
            if match:
                view = self.view_of[match.group(1).lower()]
                line = line[match.end():]
                found.setdefault(view, [])
            if view is not None:
                found[view] += [c for c in map(clean_candidate, line.split(";")) if c]
        return found


class AnswerShaper(LogitsProcessor):
    """Forces the answer's structure on a small LLM, row by row: once a section has its items (";"-separated),
    ends its line, or rambles, the next label is written for the model; after the last section, end of text.
    The model starts after the first label (PromptBook.prefix); EOS is banned until the last section."""

    def __init__(self, tokenizer, labels, limits):
        """labels: the text opening each later section; limits: per row, the item count of every section."""
        self.tokenizer, self.limits, self.eos = tokenizer, limits, tokenizer.eos_token_id
        self.labels = [tokenizer.encode(label, add_special_tokens=False) for label in labels] + [[self.eos]]
        self.text_of = {}
        self.rows = None  # per row: section, items and tokens so far in it, tokens still to force

    def _text(self, token):
        if token not in self.text_of:
            self.text_of[token] = self.tokenizer.decode([token])
        return self.text_of[token]

    def __call__(self, input_ids, scores):
        if self.rows is None:  # first step: the last token is the prompt's
            self.rows = [{"section": 0, "items": 0, "length": 0, "forced": [], "echo": 0} for _ in input_ids]
        else:
            for index, (row, token) in enumerate(zip(self.rows, input_ids[:, -1].tolist())):
                if row["echo"]:  # a token we forced: not the model's words
                    row["echo"] -= 1
                    continue
                if row["section"] >= len(self.labels):
                    continue
                text, limit = self._text(token), self.limits[index][row["section"]]
                row["items"] += text.count(";")
                row["length"] += 1
                if "\n" in text or row["items"] >= limit or row["length"] >= TOKENS_PER_ITEM * limit:
                    forced = list(self.labels[row["section"]])
                    row.update(section=row["section"] + 1, items=0, length=0, forced=forced, echo=len(forced))
        for index, row in enumerate(self.rows):
            if row["forced"]:
                token = row["forced"].pop(0)
                scores[index] = -torch.inf
                scores[index, token] = 0.0
            elif row["section"] < len(self.labels) - 1:
                scores[index, self.eos] = -torch.inf
        return scores
