"""Catalogue-constrained decoding on a tiny Llama: every named item is a catalogue item outside the history, the
choices are the model's own (argmax of its logits among the allowed tokens, checked against a plain forward pass
without any cache), and batching, padding and the shared-prefix KV cache change nothing."""
import pytest
import torch
from conftest_tiny_llm import MOVIES, make_tiny_llm
from transformers import AutoModelForCausalLM, AutoTokenizer

from recbole_lumos.augment.catalogue_decoding import CatalogueDecoder, TitleTrie, _Row
from recbole_lumos.augment.prompts import answer_title

TITLES = [""] + [answer_title(title) for title, _, _ in MOVIES]
LABELS = ["NEXT", "SIMILAR", "UNLIKE"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    folder = make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(), \
        AutoTokenizer.from_pretrained(folder, local_files_only=True)


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_trie_counts_items_below_each_node():
    trie = TitleTrie([[], [5, 6], [5, 7], [5], [8, 9, 10]])
    assert trie.size[0] == 4 and trie.size[trie.children[0][5]] == 3
    assert trie.items[trie.children[0][5]] == [3]  # a title that is a prefix of others ends inside the trie
    assert trie.path[4] == [0, trie.children[0][8], trie.children[trie.children[0][8]][9],
                            trie.children[trie.children[trie.children[0][8]][9]][10]]


def prompts(tokenizer):
    prefix = encode(tokenizer, "<s>system\nName movies.</s>\n<s>user\n")
    suffixes = [encode(tokenizer, f'"{t}"\n"{u}"</s>\n<s>assistant\nNEXT:') for t, u in
                [("Star Wars", "Alien"), ("Toy Story", "Aladdin"), ("Emma", "Fargo")]]
    return prefix, suffixes


def test_named_items_are_catalogue_items_outside_the_history_and_fill_the_plan(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS)
    prefix, suffixes = prompts(tokenizer)
    excluded = [{3, 6}, {1, 12}, {16, 21}]
    plans = [[2, 1, 3], [0, 2, 1], [4, 4, 4]]
    named = decoder.decode(prefix, suffixes, plans, excluded)
    for sections, plan, ex in zip(named, plans, excluded):
        assert [len(s) for s in sections] == plan
        items = [i for s in sections for i in s]
        assert len(set(items)) == len(items) and not set(items) & ex
        assert all(0 < i < len(TITLES) for i in items)
        for section in sections:  # no two titles of a section start with the same token
            first_nodes = [decoder.trie.path[i][1] for i in section]
            assert len(set(first_nodes)) == len(first_nodes)


def replay_choices(model, tokenizer, decoder, prefix, suffix, plan, excluded, shortlists=None):
    """Rebuilds the answer's text from the named items and checks, with ONE uncached forward pass over the whole
    text, that at every title token the decoder took the model's argmax among the tokens it allowed (catalogue
    titles outside the history and the answer, inside the section's shortlist if any, a first token not used by an
    earlier title of the same section)."""
    [sections] = decoder.decode(prefix, [suffix], [plan], [excluded], shortlists=[shortlists] if shortlists else None)
    tokens, choice_points = list(prefix) + list(suffix), []
    named = set(excluded)
    for index, items in enumerate(sections):
        first_tokens = set()
        if index:
            tokens += decoder.breaks[index - 1]
        for position, item in enumerate(items):
            if position:
                tokens += decoder.separator
            node = 0
            outside = set(range(len(TITLES))) - set(shortlists[index]) if shortlists else set()
            for token in decoder.trie.path[item][1:]:
                choice_points.append((len(tokens), node, set(named) | outside, set(first_tokens)))
                node = token
                tokens.append([t for t, child in decoder.trie.children[choice_points[-1][1]].items()
                               if child == node][0])
            first_tokens.add(tokens[len(tokens) - len(decoder.trie.path[item]) + 1])
            named.add(item)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0]
    for position, node, forbidden, used_first in choice_points:
        allowed = [t for t, child in decoder.trie.children[node].items()
                   if any(i not in forbidden for i in items_below(decoder.trie, child))]
        if node == 0:  # one title per first token in a section
            allowed = [t for t in allowed if t not in used_first] or allowed
        if len(allowed) > 1:
            scores = logits[position - 1, allowed]
            assert tokens[position] == allowed[int(scores.argmax())]
    return sections


def items_below(trie, node):
    stack, found = [node], []
    while stack:
        n = stack.pop()
        found += trie.items[n]
        stack += trie.children[n].values()
    return found


def test_each_title_token_is_the_models_argmax_among_allowed_tokens(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS, complete_titles=True)  # the answer = full titles
    prefix, suffixes = prompts(tokenizer)
    sections = replay_choices(model, tokenizer, decoder, prefix, suffixes[0], [3, 2, 3], {3, 6})
    assert sum(map(len, sections)) == 8


def test_with_shortlists_each_section_names_the_models_choice_among_its_own_items(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS, complete_titles=True)
    prefix, suffixes = prompts(tokenizer)
    shortlists = [[1, 2, 4, 5, 7, 9], [2, 4, 8, 10, 11], [12, 13, 14, 15, 17]]
    sections = replay_choices(model, tokenizer, decoder, prefix, suffixes[0], [3, 2, 3], {3, 6}, shortlists)
    assert [len(s) for s in sections] == [3, 2, 3]
    assert all(set(items) <= set(short) for items, short in zip(sections, shortlists))


def test_a_shortlist_too_short_for_its_section_passes_on_to_the_next(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS)
    prefix, suffixes = prompts(tokenizer)
    [sections] = decoder.decode(prefix, suffixes[:1], [[3, 3, 2]], [{2}],
                                shortlists=[[[1, 2], [11, 12, 13, 14], [5, 9, 10]]])
    assert sections[0] == [1]  # 2 is in the history: one item left to name
    assert len(sections[1]) == 3 and set(sections[1]) <= {11, 12, 13, 14}
    assert len(sections[2]) == 2 and set(sections[2]) <= {5, 9, 10}


class ScriptedDecoder(CatalogueDecoder):
    """The decoder's per-row logic without a model: token t scores ``preference[t]`` (higher is chosen)."""

    def __init__(self, token_sequences, preference, vocabulary=32):
        self.trie = TitleTrie(token_sequences)
        self.separator, self.breaks, self.complete_titles = [1], [[2], [3]], False
        self.tokenizer = type("Tokenizer", (), {"eos_token_id": 0})()
        self.output_weight = torch.eye(vocabulary)
        self.hidden = torch.zeros(vocabulary)
        for token, score in preference.items():
            self.hidden[token] = score

    def answer(self, plan, excluded=(), shortlists=None):
        row = _Row(self.trie, plan, set(excluded), shortlists=shortlists)
        while self._next_token(row, self.hidden) is not None:
            pass
        return row.named


def test_a_section_may_start_like_an_earlier_sections_title():
    """One title per first token within a section, not across sections: SIMILAR may start like a NEXT title.
    Items: 1 = [10, 11] ("Star Wars"), 2 = [10, 12] ("Star Trek"), 3 = [20] ("Alien"); the model prefers 10."""
    decoder = ScriptedDecoder([[], [10, 11], [10, 12], [20]], {10: 5, 11: 3, 12: 2, 20: 1})
    assert decoder.answer([1, 1, 0]) == [[1], [2], []]  # SIMILAR starts with 10 again: the model's choice
    assert decoder.answer([2, 0, 0]) == [[1, 3], [], []]  # within NEXT, the second title may not start with 10
    assert decoder.answer([1, 1, 1]) == [[1], [2], [3]]  # named items stay excluded by item id
    assert decoder.answer([1, 0, 1]) == [[1], [], [2]]  # UNLIKE too


def test_batching_padding_and_prefix_cache_change_nothing(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS)
    prefix, suffixes = prompts(tokenizer)
    plans, excluded = [[2, 2, 2]] * 3, [{3}, {1}, {16}]
    together = decoder.decode(prefix, suffixes, plans, excluded)
    alone = [decoder.decode(prefix, [s], [p], [e])[0] for s, p, e in zip(suffixes, plans, excluded)]
    no_prefix = [CatalogueDecoder(model, tokenizer, TITLES, LABELS).decode([], [prefix + s], [p], [e])[0]
                 for s, p, e in zip(suffixes, plans, excluded)]
    assert together == alone == no_prefix


def test_stopping_titles_early_names_items_with_fewer_tokens(llm):
    model, tokenizer = llm
    prefix, suffixes = prompts(tokenizer)
    plans, excluded = [[3, 2, 3]] * 3, [{3}, {1}, {16}]
    full = CatalogueDecoder(model, tokenizer, TITLES, LABELS, complete_titles=True)
    short = CatalogueDecoder(model, tokenizer, TITLES, LABELS, complete_titles=False)
    full.decode(prefix, suffixes, plans, excluded)
    named = short.decode(prefix, suffixes, plans, excluded)
    assert short.tokens_processed < full.tokens_processed
    assert all([len(s) for s in sections] == [3, 2, 3] for sections in named)


def test_sampling_follows_each_rows_generator(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS)
    prefix, suffixes = prompts(tokenizer)
    draw = lambda seeds: decoder.decode(prefix, suffixes[:2], [[3, 3, 3]] * 2, [set(), set()],  # noqa: E731
                                        [torch.Generator().manual_seed(s) for s in seeds], temperature=2.0)
    assert draw([1, 2]) == draw([1, 2])
    assert draw([1, 2])[0] == draw([1, 5])[0]  # a row's draw depends on its own generator only
    assert any(draw([s, 2])[0] != draw([1, 2])[0] for s in range(3, 8))


def test_exhausted_catalogue_ends_the_row(llm):
    model, tokenizer = llm
    decoder = CatalogueDecoder(model, tokenizer, TITLES, LABELS)
    prefix, suffixes = prompts(tokenizer)
    everything_but_two = set(range(1, len(TITLES))) - {5, 9}
    [sections] = decoder.decode(prefix, suffixes[:1], [[3, 3, 3]], [everything_but_two])
    assert sorted(i for s in sections for i in s) == [5, 9]
