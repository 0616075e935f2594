"""RecBole atomic files: validation, and the dataset entry point for the CLI (converters write via staging.py)."""
import glob
import os

from recbole_lumos.data.lcrec import convert_lcrec, find_lcrec_files
from recbole_lumos.data.movielens import prepare_ml1m
from recbole_lumos.data.sequence_format import convert_sequence_file
from recbole_lumos.data.staging import staged_output  # noqa: F401  (re-exported: converters write through it)
from recbole_lumos.errors import LumosError

FIELD_TYPES = {"token", "token_seq", "float", "float_seq"}
BUILT_IN = ("ml-100k", "ml-1m")
def _parse_header(path, header):
    fields, names = header.split("\t"), []
    for field in fields:
        name, sep, ftype = field.partition(":")
        if not sep or not name or ftype not in FIELD_TYPES:
            raise LumosError(
                f"{path} line 1: header field '{field}' is not name:type with type one of "
                f"{', '.join(sorted(FIELD_TYPES))}; fix the header, e.g. 'user_id:token'"
            )
        if name in names:
            raise LumosError(f"{path} line 1: field '{name}' appears twice in the header; rename or drop one")
        names.append(name)
    return fields


def _is_number(value):
    try:
        float(value)
        return True
    except ValueError:
        return False


def _validate_file(path):
    with open(path, encoding="utf-8") as f:
        try:
            fields = _parse_header(path, f.readline().rstrip("\n"))
            n = len(fields)
            float_cols = [i for i, field in enumerate(fields) if field.endswith(":float")]
            lineno = 1
            for lineno, line in enumerate(f, 2):
                cols = line.rstrip("\n").split("\t")
                if len(cols) != n:
                    raise LumosError(
                        f"{path} line {lineno}: {len(cols)} tab-separated columns, the header has {n}; "
                        "fix that line (columns are separated by one tab, empty values are allowed)"
                    )
                for i in float_cols:
                    if cols[i] and not _is_number(cols[i]):  # empty means missing, which RecBole allows
                        raise LumosError(
                            f"{path} line {lineno}: '{cols[i]}' in float column '{fields[i]}' is not a number; "
                            "fix the value or declare the column as :token"
                        )
        except UnicodeDecodeError:
            raise LumosError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None
    if lineno == 1:  # RecBole would fail much later with "Some feat is empty"
        raise LumosError(f"{path} has a header and no rows: add its data, or remove the file")


def validate_atomic_files(data_path, name):
    """Check data_path/name/name.{inter,item,user} (those that exist); raise LumosError at the first problem."""
    for suffix in ("inter", "item", "user"):
        path = os.path.join(data_path, name, f"{name}.{suffix}")
        if os.path.isfile(path):
            _validate_file(path)


def ensure_dataset(name, data_path, show_progress=True, raw_data_path=None):
    """Make data_path/name ready for RecBole: download/convert what we know how to, then validate. Source files are
    looked for in data_path/name, then in raw_data_path/name (the ``raw_data_path`` setting: a folder holding
    source datasets, e.g. a shared read-only copy; the converted files always go to data_path/name)."""
    folder = os.path.join(data_path, name)
    if name == "ml-100k" and not os.path.isdir(folder):
        return  # RecBole falls back to the copy in its wheel
    if name == "ml-1m":
        prepare_ml1m(data_path, show_progress=show_progress)
    elif not os.path.isfile(os.path.join(folder, f"{name}.inter")):
        _convert_source(name, data_path, raw_data_path)
    validate_atomic_files(data_path, name)


def _convert_source(name, data_path, raw_data_path):
    """Convert the first source files found in data_path/name, then raw_data_path/name, into data_path/name."""
    folders = [os.path.join(data_path, name)] + ([os.path.join(raw_data_path, name)] if raw_data_path else [])
    for source in filter(os.path.isdir, folders):
        lcrec = find_lcrec_files(source)
        if lcrec:
            convert_lcrec(*lcrec, data_path, name)
            return
        txts = sorted(glob.glob(os.path.join(glob.escape(source), "*.txt")))
        if len(txts) > 1:
            raise LumosError(f"Several .txt files in {source}: keep only the one-line-per-user sequence file")
        if txts:
            convert_sequence_file(txts[0], data_path, name)
            return
    raise LumosError(
        f"Unknown dataset '{name}': put RecBole atomic files at {folders[0]}/{name}.inter, or source files "
        f"(a one-line-per-user .txt, or LC-Rec <Name>.inter.json + <Name>.item.json) in {' or '.join(folders)}; "
        f"built in: {', '.join(BUILT_IN)}"
    )


def check_loaded_columns(folder, name, load_col):
    """Every column the config loads (``load_col``) must be in its file's header; RecBole fails with a long
    traceback otherwise. Files that do not exist (e.g. a dataset RecBole provides itself) are not checked."""
    for suffix, wanted in (load_col or {}).items():
        path = os.path.join(folder, f"{name}.{suffix}")
        if not wanted or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            present = [field.partition(":")[0] for field in f.readline().rstrip("\n").split("\t")]
        missing = [column for column in wanted if column not in present]
        if missing:
            raise LumosError(
                f"{path} has no column {', '.join(missing)} (its header: {', '.join(present)}), "
                f"which load_col.{suffix} loads: add the column, or set load_col without it "
                f"(e.g. --load_col=\"{{'{suffix}': {[c for c in wanted if c in present]}}}\")"
            )
