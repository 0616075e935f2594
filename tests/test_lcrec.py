"""The LC-Rec layout (`<Name>.inter.json` + `<Name>.item.json`) converted to atomic files and loaded by RecBole.

A tiny generated fixture covers conversion, HTML entities and malformed files; the real Amazon Office and Beauty
files are read from ../shared/datasets when present (skipped otherwise).
"""
import json
from pathlib import Path

import pytest
import yaml
from recbole.data import create_dataset

from recbole_lumos.augment.catalogue import catalogue_from_dataset
from recbole_lumos.augment.prompts import PromptBook
from recbole_lumos.data.atomic import ensure_dataset
from recbole_lumos.data.lcrec import convert_lcrec
from recbole_lumos.errors import LumosError
from recbole_lumos.quick_start import PROPERTIES, build_config
from tests.test_datasets import assert_no_output, read_rows

HISTORIES = {"u1": [0, 1, 2], "u2": [2, 0, 3, 1], "u3": ["3", "1", 4]}  # real files use integer ids; strings work too
ITEMS = {
    "0": {"title": "AT&amp;T Corded Phone, Black", "brand": "AT&amp;T", "description": "",
          "categories": "Office Electronics, Telephones &amp; Accessories"},
    "1": {"title": "Quartet&reg; Chalkboard, 14&quot; x 14&quot;", "brand": "Quartet",
          "categories": "Office & School Supplies, Boards"},
    "2": {"title": "Gel\tPens,\n12 Pack", "categories": ["Office & School Supplies", "Pens"]},  # list form too
    "3": {"title": "Stapler", "brand": None, "categories": "Office & School Supplies"},
    "4": {"title": "&quot;No Mess&quot; Tape", "categories": "Office & School Supplies"},  # pandas reads quotes
}  # fmt: skip


def write_lcrec(folder, histories=HISTORIES, items=ITEMS, stem="Office"):
    folder.mkdir(parents=True, exist_ok=True)
    inter, item = folder / f"{stem}.inter.json", folder / f"{stem}.item.json"
    inter.write_text(histories if isinstance(histories, str) else json.dumps(histories), encoding="utf-8")
    if items is not None:
        item.write_text(items if isinstance(items, str) else json.dumps(items), encoding="utf-8")
    return inter, item


def load(data_path, dataset, model="FedSASRec", raw_data_path=None):
    """The dataset as a run builds it: the plugin's yaml, build_config (which converts) and RecBole's loader."""
    settings = {"data_path": str(data_path), "state": "WARNING", "raw_data_path": raw_data_path}
    config = build_config(model, dataset, config_dict={k: v for k, v in settings.items() if v is not None})
    return config, create_dataset(config)


def test_conversion_writes_atomic_files(tmp_path):
    inter, item = write_lcrec(tmp_path / "src")
    folder = convert_lcrec(str(inter), str(item), str(tmp_path / "data"), "toy")
    assert sorted(p.name for p in Path(folder).iterdir()) == ["toy.inter", "toy.item"]
    assert read_rows(Path(folder) / "toy.inter") == [
        ["user_id:token", "item_id:token", "timestamp:float"],
        ["u1", "0", "0"], ["u1", "1", "1"], ["u1", "2", "2"],
        ["u2", "2", "0"], ["u2", "0", "1"], ["u2", "3", "2"], ["u2", "1", "3"],
        ["u3", "3", "0"], ["u3", "1", "1"], ["u3", "4", "2"],
    ]  # fmt: skip
    assert read_rows(Path(folder) / "toy.item") == [
        ["item_id:token", "title:token_seq", "categories:token", "brand:token"],
        ["0", "AT&T Corded Phone, Black", "Office Electronics, Telephones & Accessories", "AT&T"],
        ["1", 'Quartet® Chalkboard, 14" x 14"', "Office & School Supplies, Boards", "Quartet"],
        ["2", "Gel Pens, 12 Pack", "Office & School Supplies, Pens", ""],
        ["3", "Stapler", "Office & School Supplies", ""],
        ["4", '"""No Mess"" Tape"', "Office & School Supplies", ""],
    ]


def test_loaded_through_recbole_with_the_dataset_yaml(tmp_path):
    """A folder named amazon-office in data_path wins over the shared copy and gets properties/dataset/ yaml."""
    write_lcrec(tmp_path / "amazon-office")
    config, dataset = load(tmp_path, "amazon-office")
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (3, 5, 10)  # ids count padding
    assert config["item_genre_field"] == "categories" and config["llm_prompts"] == "prompts/products.yaml"
    catalogue = catalogue_from_dataset(dataset)
    texts = {catalogue.titles[dataset.token2id("item_id", i)]: catalogue.texts[dataset.token2id("item_id", i)]
             for i in ITEMS}
    assert (texts["AT&T Corded Phone, Black"]
            == "AT&T Corded Phone, Black | Office Electronics, Telephones & Accessories")
    assert texts["Stapler"] == "Stapler | Office & School Supplies"
    assert texts['"No Mess" Tape'] == '"No Mess" Tape | Office & School Supplies'
    # chronological order = list order: u2's last item (1) is its test item
    uid = dataset.token2id("user_id", "u2")
    rows = dataset.inter_feat[dataset.inter_feat["user_id"] == uid]
    assert [dataset.id2token("item_id", i) for i in rows.sort_values("timestamp")["item_id"]] == ["2", "0", "3", "1"]


def test_converted_once(tmp_path):
    write_lcrec(tmp_path / "shop")
    ensure_dataset("shop", str(tmp_path), raw_data_path=None)
    inter = tmp_path / "shop" / "shop.inter"
    before = inter.stat().st_mtime_ns
    ensure_dataset("shop", str(tmp_path), raw_data_path=None)
    assert inter.stat().st_mtime_ns == before


def test_found_in_the_raw_data_path(tmp_path):
    write_lcrec(tmp_path / "raw" / "shop")
    ensure_dataset("shop", str(tmp_path / "data"), raw_data_path=str(tmp_path / "raw"))
    assert sorted(p.name for p in (tmp_path / "data" / "shop").iterdir()) == ["shop.inter", "shop.item"]
    assert not (tmp_path / "raw" / "shop" / "shop.inter").exists()  # the source folder is only read


def test_raw_data_path_is_a_setting_and_nothing_else_is_searched(tmp_path):
    write_lcrec(tmp_path / "raw" / "shop")
    settings = {"data_path": str(tmp_path / "data"), "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    with pytest.raises(LumosError, match="Unknown dataset 'shop'"):
        build_config("FedSASRec", "shop", config_dict=settings)
    config = build_config("FedSASRec", "shop", config_dict={**settings, "raw_data_path": str(tmp_path / "raw")})
    assert create_dataset(config).user_num - 1 == len(HISTORIES)


@pytest.mark.parametrize(
    "histories, items, expected",
    [
        ('{"u1": [0, 1', ITEMS, r"Office\.inter\.json is not valid JSON \(line 1 column 13"),
        ([[0, 1]], ITEMS, r"Office\.inter\.json must be a JSON object"),
        ({"u1": 3}, ITEMS, r"user 'u1' must map to a non-empty list"),
        ({"u1": []}, ITEMS, r"user 'u1' must map to a non-empty list"),
        ({"u1": [0, {"id": 1}]}, ITEMS, r"user 'u1' has item \{'id': 1\} in its list; item ids are strings or int"),
        ({"u1": [0, None]}, ITEMS, r"user 'u1' has item None"),
        ({"u1": [0, 9]}, ITEMS, r"user 'u1' has item '9', which Office\.item\.json lacks"),
        (HISTORIES, None, r"Office\.item\.json is missing"),
        (HISTORIES, "[1, 2]", r"Office\.item\.json must be a JSON object"),
        (HISTORIES, {"0": {"title": 5}}, r"item '0' has title 5; expected a string"),
    ],
    ids=["not-json", "inter-not-object", "not-a-list", "empty-list", "dict-item", "null-item", "unknown-item",
         "item-file-missing", "items-not-object", "title-not-text"],
)
def test_malformed_files(tmp_path, histories, items, expected):
    write_lcrec(tmp_path / "data" / "shop", histories, items)
    with pytest.raises(LumosError, match=expected) as err:
        ensure_dataset("shop", str(tmp_path / "data"), raw_data_path=None)
    assert "\n" not in str(err.value)
    assert_no_output(tmp_path / "data")


def test_two_lcrec_datasets_in_one_folder(tmp_path):
    write_lcrec(tmp_path / "shop")
    write_lcrec(tmp_path / "shop", stem="Beauty")
    with pytest.raises(LumosError, match="Several .inter.json files"):
        ensure_dataset("shop", str(tmp_path), raw_data_path=None)


def test_product_prompt_of_the_dataset_yaml():
    """llm_prompts is relative to properties/; the product prompt parses like views.yaml (same labels, example)."""
    for name in ("amazon-office", "amazon-beauty-text"):
        spec = yaml.safe_load((Path(PROPERTIES) / "dataset" / f"{name}.yaml").read_text())
        assert spec["llm_prompts"] == "prompts/products.yaml"
    book = PromptBook("prompts/products.yaml")  # resolved against properties/, as the dataset yaml gives it
    views = PromptBook()
    assert book.labels == views.labels
    assert {k: len(v) for k, v in book.parse(yaml.safe_load(book.text)["examples"][0]["answer"]).items()} == {
        "future": 3, "rephrase": 2, "counterfactual": 3}
    request = book.messages([("AT&T Corded Phone | Office Electronics", "AT&T Corded Phone")], 3, 2, 3)[-1]
    assert "Products bought" in request["content"] and '"AT&T Corded Phone" Office Electronics' in request["content"]
    prefix, rest = book.split(lambda messages: "\n".join(m["content"] for m in messages))  # shared-prefix cache
    assert prefix.endswith("Products bought, oldest first:\n")
    part = rest([("Stapler | Office", "Stapler")], 3, 2, 3)  # the per-client part: history, the first label
    assert part == '"Stapler" Office' + "NEXT:"


def test_missing_prompt_file_is_an_error_not_a_fallback():
    from recbole_lumos.augment import create_view_builder

    with pytest.raises(LumosError, match="Prompt file .*nowhere.yaml does not exist"):
        create_view_builder({"views": "llm", "llm_prompts": "prompts/nowhere.yaml", "views_fallback": True}, None)


# ---------------------------------------------------------------- the real datasets in ../shared/datasets
RAW_DATA_PATH = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # read when present

REAL = {  # name: (users, items, interactions) as documented in shared/datasets/README.md
    "amazon-office": (4905, 2420, 53258),
    "amazon-beauty-text": (22363, 12101, 198502),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset_counts(tmp_path, name):
    if not (Path(RAW_DATA_PATH) / name).is_dir():
        pytest.skip(f"{name} not found in {RAW_DATA_PATH}")
    _, dataset = load(tmp_path, name, raw_data_path=str(RAW_DATA_PATH))
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == REAL[name]
    catalogue = catalogue_from_dataset(dataset)
    source = json.loads(next((Path(RAW_DATA_PATH) / name).glob("*.item.json")).read_text(encoding="utf-8"))
    untitled = {item for item, meta in source.items() if not meta["title"].strip()}  # Office has a few
    assert {dataset.id2token("item_id", i) for i, t in enumerate(catalogue.titles) if not t and i} == untitled
    assert not any("&amp;" in t or "&quot;" in t for t in catalogue.texts)
    assert all(" | " in text for i, text in enumerate(catalogue.texts[1:], 1) if catalogue.titles[i])
