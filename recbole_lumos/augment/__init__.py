"""On-device view generators. ``create_view_builder`` picks one by the ``views`` config key."""
from logging import getLogger

from recbole_lumos.augment.settings import setting, view_seed
from recbole_lumos.errors import LumosError

VIEW_KINDS = ("llm", "embedding", "random")


def check_item_text(config, dataset, kind):
    """Generated views read item text: say in one line why a dataset has none (the usual cause: the .item file, or
    its title column, is not in ``load_col``)."""
    field = setting(config, "item_title_field")
    loaded = [] if dataset.item_feat is None else list(dataset.item_feat.columns)
    if field and field in loaded:
        return
    name, fix = config["dataset"], "or use views=random"
    if not field:
        raise LumosError(f"views={kind} needs item text, and item_title_field is not set: name the .item column "
                         f"that holds the titles (--item_title_field=...), {fix}")
    load_col = config["load_col"]
    if load_col is not None and field not in (load_col.get("item") or []):  # None: RecBole loads every column
        raise LumosError(f"views={kind} reads item_title_field '{field}', which load_col does not load ({load_col}): "
                         f"add it, e.g. load_col: {{..., item: [item_id, {field}]}}, {fix}")
    raise LumosError(f"views={kind} reads item_title_field '{field}', and dataset {name} has no such item column "
                     f"(loaded: {', '.join(loaded) or 'no .item file'}): set item_title_field, {fix}")


def create_view_builder(config, dataset):
    kind = config["views"]
    if kind == "random":
        from recbole_lumos.augment.random_views import RandomViewBuilder

        return RandomViewBuilder(dataset.item_num, seed=view_seed(config))
    if kind == "embedding":
        from recbole_lumos.augment.embedding_views import build_embedding_views

        check_item_text(config, dataset, kind)
        return build_embedding_views(config, dataset)
    if kind == "llm":
        from recbole_lumos.augment.prompts import prompt_file

        prompt_file(setting(config, "llm_prompts"))  # a misspelt prompt path is an error, never a silent fallback
        check_item_text(config, dataset, kind)  # no text: no fallback either (embedding views read text too)
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
