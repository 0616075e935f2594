"""Prompts for the three views (properties/prompts/*.yaml): the shared part, each client's part, item lines.

Item text is untrusted: a title may hold newlines, chat-template markers, "NEXT:" lines or thousands of characters.
Every item becomes ONE quoted line made of word characters and plain punctuation, truncated. The answer needs no
parsing: the LLM writes it inside the catalogue's titles (catalogue_decoding); ``parse`` reads the few-shot
example's counts.
"""
import re
import unicodedata
from pathlib import Path

import yaml

from recbole_lumos.errors import LumosError
from recbole_lumos.paths import PROPERTIES

DEFAULT_PROMPTS = PROPERTIES / "prompts" / "views.yaml"
MAX_TITLE_CHARS, MAX_DETAIL_CHARS, MAX_CANDIDATE_CHARS = 80, 60, 120
MAX_GENRES = 2
UNSAFE = re.compile(r"[^\w .,'!?&:()\-/]+")  # drops newlines, quotes, ";", "|", "<|im_end|>", braces, markup
BULLET = re.compile(r"^\s*(?:[-*•]+|\d+\s*[.)])\s*")
TRAILER = re.compile(r"\s*(?:\(\s*\d{4}.*|\|.*)$")  # "(1995) | Comedy" after a title


def sanitise(text, max_chars):
    text = " ".join(UNSAFE.sub(" ", unicodedata.normalize("NFKC", str(text))).split())
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + "..."


def short_title(title):
    """'Usual Suspects, The' and 'The Usual Suspects' -> 'Usual Suspects'. Without its article a title starts with
    its own words: decoding in the title trie would otherwise pick the likeliest first token, ' The', and then only
    'The ...' titles (measured: all 8 items of a user's views)."""
    title = re.sub(r", (The|A|An)$", "", title.strip(), flags=re.I)
    return re.sub(r"^(The|A|An) (?=\S)", "", title, flags=re.I)


def item_line(text, title=None, year=True):
    """One prompt line for an item: its quoted short title, year and first genres: '"Alien" (1979) Horror, Sci-Fi'.
    Every token of it is paid for by every client: the line stays short (year=False drops the year, which
    SmolLM2's tokenizer writes as six tokens)."""
    title = title if title is not None else TRAILER.sub("", text)
    detail = text[len(title):] if text.startswith(title) else ""
    when, _, genres = detail.partition("|")
    detail = sanitise(f"{when if year else ''} {', '.join(genres.split(', ')[:MAX_GENRES])}", MAX_DETAIL_CHARS)
    line = f'"{answer_title(title)}"'
    return f"{line} {detail}" if detail else line


def answer_title(title):
    """How an item's title is written in an answer (and in the trie the LLM decodes in): as the prompt shows it."""
    return sanitise(short_title(title), MAX_TITLE_CHARS) if title else ""


def clean_candidate(text):
    """A title named by the LLM, without quotes, bullets, year or genres; '' when nothing title-like is left."""
    text = TRAILER.sub("", BULLET.sub("", text)).strip(" \t\"'`*.,")
    return text[:MAX_CANDIDATE_CHARS] if re.search(r"\w", text) else ""


def prompt_file(path=None):
    """The prompt file: a path as given, else relative to the package's properties/ (a dataset's yaml says
    ``llm_prompts: prompts/products.yaml``); a missing file is bad input, not a reason to fall back."""
    path = Path(path or DEFAULT_PROMPTS)
    if not path.is_absolute() and not path.exists():
        path = PROPERTIES / path
    if not path.is_file():
        raise LumosError(f"Prompt file {path} does not exist: check llm_prompts")
    return path


class PromptBook:
    def __init__(self, path=None):
        self.text = prompt_file(path).read_text(encoding="utf-8")
        spec = yaml.safe_load(self.text)
        self.system, self.user, self.labels = spec["system"], spec["user"], spec["labels"]
        self.show_year = spec.get("show_year", True)
        self.prefix = f"{next(iter(self.labels))}:"  # the answer's first label, written for the model
        self.view_of = {label.lower(): view for label, view in self.labels.items()}
        self.label_re = re.compile(r"^\W*(%s)\W*?[:=-]" % "|".join(map(re.escape, self.labels)), re.I)
        self.shots = []
        for example in spec.get("examples") or []:
            counts = {view: len(items or []) for view, items in self.parse(example["answer"]).items()}
            lines = [item_line(text, year=self.show_year) for text in example["history"]]
            self.shots += [{"role": "user", "content": self._user(lines, **counts)},
                           {"role": "assistant", "content": example["answer"].strip()}]

    def _user(self, lines, future=0, rephrase=0, counterfactual=0):
        return self.user.format(history="\n".join(lines), n_future=future, n_similar=rephrase,
                                n_negative=counterfactual)

    def messages(self, items, n_future, n_similar, n_negative):
        """items: [(catalogue text, bare title)] oldest first -> chat messages (system, few-shot, request)."""
        request = self._user([item_line(text, title, self.show_year) for text, title in items], n_future, n_similar,
                             n_negative)
        return [{"role": "system", "content": self.system}, *self.shots, {"role": "user", "content": request}]

    def split(self, render):
        """The rendered conversation cut where the history goes: (shared prefix text, a function that renders
        the rest for one request). ``render``: chat messages -> prompt text (the LLM's chat template). The prefix
        (system, few-shot example, the request's opening words) is the same for every client: it is encoded once."""
        marker = "\x00HISTORY\x00"
        text = render([{"role": "system", "content": self.system}, *self.shots,
                       {"role": "user", "content": self.user.replace("{history}", marker)}])
        prefix = text[: text.index(marker)]

        def rest(items, n_future, n_similar, n_negative):
            full = render(self.messages(items, n_future, n_similar, n_negative)) + self.prefix
            if not full.startswith(prefix):
                raise LumosError("the prompt's user template must start its per-client part with {history}")
            return full[len(prefix):]

        return prefix, rest

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
