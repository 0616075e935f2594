"""On-device view generators. ``create_view_builder`` picks one by the ``views`` config key."""
from logging import getLogger

from recbole_lumos.augment.settings import setting, view_seed
from recbole_lumos.errors import LumosError

VIEW_KINDS = ("llm", "embedding", "random")


def create_view_builder(config, dataset):
    kind = config["views"]
    if kind == "random":
        from recbole_lumos.augment.random_views import RandomViewBuilder

        return RandomViewBuilder(dataset.item_num, seed=view_seed(config))
    if kind == "embedding":
        from recbole_lumos.augment.embedding_views import build_embedding_views

        return build_embedding_views(config, dataset)
    if kind == "llm":
        from recbole_lumos.augment.prompts import prompt_file

        prompt_file(setting(config, "llm_prompts"))  # a misspelt prompt path is an error, never a silent fallback
        try:
            from recbole_lumos.augment.llm_views import build_llm_views

            return build_llm_views(config, dataset)
        except (ImportError, OSError, LumosError) as e:  # no LLM or no item text: say why in one line, go on
            if not setting(config, "views_fallback"):  # a benchmark row must be what it says it is
                raise LumosError(f"LLM views unavailable ({type(e).__name__}: {e}) "
                                 "and views_fallback is False") from None
            getLogger().warning(f"LLM views unavailable ({type(e).__name__}: {e}); falling back to embedding views")
            config["views"] = "embedding"
            return create_view_builder(config, dataset)
    raise LumosError(f"Unknown views '{kind}': choose one of {', '.join(VIEW_KINDS)}")
