"""The LC-Rec layout (LC-Rec, LETTER and other LLM-recommendation codebases) as RecBole atomic files.

`<Name>.inter.json` = {user: [item, item, ...]}, oldest first, no timestamps;
`<Name>.item.json` = {item: {"title", "categories", "brand", "description"}} (any of them may be missing).
The position in a user's list becomes the timestamp. Titles become a token_seq of words (like ml-100k's
movie_title), categories and brand one token each, HTML entities decoded (`&amp;` -> `&`); descriptions are left
out (long, and no view builder reads them).
"""
import glob
import html
import json
import os

from recbole_lumos.data.staging import field_text, staged_output
from recbole_lumos.errors import LumosError

INTER_SUFFIX, ITEM_SUFFIX = ".inter.json", ".item.json"
ITEM_FIELDS = ("title", "categories", "brand")
ITEM_HEADER = "item_id:token\ttitle:token_seq\tcategories:token\tbrand:token\n"


def find_lcrec_files(folder):
    """(inter json, item json) in `folder`, or None when it holds no `*.inter.json`."""
    inters = sorted(glob.glob(os.path.join(glob.escape(folder), f"*{INTER_SUFFIX}")))
    if not inters:
        return None
    if len(inters) > 1:
        raise LumosError(f"Several {INTER_SUFFIX} files in {folder}: keep only one LC-Rec dataset per folder")
    item_path = inters[0][: -len(INTER_SUFFIX)] + ITEM_SUFFIX
    if not os.path.isfile(item_path):
        raise LumosError(f"{item_path} is missing: an LC-Rec dataset needs it next to {os.path.basename(inters[0])}")
    return inters[0], item_path


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LumosError(f"{path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise LumosError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None


def _is_id(value):
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _read_histories(path):
    histories = _load_json(path)
    if not isinstance(histories, dict):
        raise LumosError(f'{path} must be a JSON object {{"user": [item, ...]}}, got a {type(histories).__name__}')
    for user, items in histories.items():
        if not isinstance(items, list) or not items:
            raise LumosError(f"{path}: user '{user}' must map to a non-empty list of item ids, got {items!r:.60}")
        bad = [item for item in items if not _is_id(item)]
        if bad:
            raise LumosError(f"{path}: user '{user}' has item {bad[0]!r:.60} in its list; "
                             "item ids are strings or integers")
    return histories


def _text(value, path, item, field):
    """A field's text, HTML entities decoded and whitespace collapsed; a list (of categories) is joined."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ", ".join(value)
    if not isinstance(value, str):
        raise LumosError(f"{path}: item '{item}' has {field} {value!r:.60}; expected a string")
    return field_text(html.unescape(value))


def _read_items(path):
    items = _load_json(path)
    if not isinstance(items, dict) or not all(isinstance(meta, dict) for meta in items.values()):
        raise LumosError(f'{path} must be a JSON object {{"item": {{"title": ..., "categories": ...}}}}')
    return {
        field_text(item): [_text(meta.get(field), path, item, field) for field in ITEM_FIELDS]
        for item, meta in items.items()
    }


def convert_lcrec(inter_path, item_path, data_path, name):
    """Write data_path/name/name.{inter,item}; return the folder."""
    histories, items = _read_histories(inter_path), _read_items(item_path)
    folder = os.path.join(data_path, name)
    with staged_output(folder) as tmp:
        with open(os.path.join(tmp, f"{name}.inter"), "w", encoding="utf-8") as out:
            out.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for user, history in histories.items():
                history = [field_text(str(item)) for item in history]
                unknown = next((item for item in history if item not in items), None)
                if unknown is not None:
                    raise LumosError(
                        f"{inter_path}: user '{user}' has item {unknown!r}, which {os.path.basename(item_path)} "
                        "lacks; use the item file of the same dataset"
                    )
                out.writelines(f"{field_text(user)}\t{item}\t{pos}\n" for pos, item in enumerate(history))
        with open(os.path.join(tmp, f"{name}.item"), "w", encoding="utf-8") as out:
            out.write(ITEM_HEADER)
            out.writelines("\t".join([item, *fields]) + "\n" for item, fields in items.items())
    return folder
