"""Generated views read item text: a dataset whose titles are not loaded is one clear line naming the cause."""
import pytest

from recbole_lumos.errors import LumosError
from recbole_lumos.quick_start import run
from tests.conftest import tiny_settings

INTER_ONLY = {"inter": ["user_id", "item_id", "rating", "timestamp"]}


@pytest.mark.parametrize("views", ["embedding", "llm"])
def test_title_field_set_but_item_file_not_loaded_names_load_col(tiny_data, in_tmp, one_thread, views):
    settings = tiny_settings(tiny_data, views=views, load_col=INTER_ONLY, views_fallback=False)
    with pytest.raises(LumosError, match=r"item_title_field 'movie_title', which load_col does not load"):
        run("LUMOS", "tiny", config_dict=settings, saved=False)


def test_title_field_missing_from_the_item_file_names_the_columns_loaded(tiny_data, in_tmp, one_thread):
    settings = tiny_settings(tiny_data, views="embedding", item_title_field="title", load_col=None)
    with pytest.raises(LumosError, match=r"no such item column \(loaded: .*movie_title"):
        run("LUMOS", "tiny", config_dict=settings, saved=False)
