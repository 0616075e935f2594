"""Datasets: MovieLens-1M conversion and download, the one-line-per-user format, atomic-file validation.

Real data is read from ../shared/datasets (relative to the repo root) and the tests that need it skip when it is
absent; everything else is generated here. Nothing touches the network: downloads use file:// and a local server.
"""
import functools
import hashlib
import http.server
import os
import random
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

import recbole_lumos  # noqa: F401  (importing the package patches RecBole for numpy 2)
from recbole_lumos.data.atomic import ensure_dataset, validate_atomic_files
from recbole_lumos.data.movielens import prepare_ml1m
from recbole_lumos.data.sequence_format import convert_sequence_file
from recbole_lumos.errors import LumosError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ML1M_META = SHARED / "ml-1m-meta"
BEAUTY = SHARED / "amazon-beauty" / "Beauty.txt"
needs_ml1m_meta = pytest.mark.skipif(
    not (ML1M_META / "movies.dat").is_file(), reason=f"real MovieLens-1M metadata not found at {ML1M_META}"
)
needs_beauty = pytest.mark.skipif(not BEAUTY.is_file(), reason=f"Amazon Beauty not found at {BEAUTY}")

N_USERS, PER_USER = 30, 10


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def fake_ratings(movie_ids):
    """A small ratings.dat in GroupLens' format; user 1 rates movie 73 (an accented title)."""
    rng = random.Random(0)
    lines = []
    for user in range(1, N_USERS + 1):
        items = rng.sample(movie_ids, PER_USER)
        if user == 1 and "73" not in items:
            items[0] = "73"
        lines += [f"{user}::{item}::{rng.randint(1, 5)}::{978300000 + 60 * k}" for k, item in enumerate(items)]
    return "\n".join(lines) + "\n"


def write_raw_ml1m(folder):
    """Real movies.dat and users.dat plus a generated ratings.dat, as prepare_ml1m finds them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("movies.dat", "users.dat"):
        shutil.copyfile(ML1M_META / name, folder / name)  # copyfile: the shared copies are read-only
    with open(ML1M_META / "movies.dat", encoding="iso-8859-1") as f:
        movie_ids = [line.split("::")[0] for line in f]
    (folder / "ratings.dat").write_text(fake_ratings(movie_ids))


def make_zip(path):
    """A zip laid out like the official one (ml-1m/*.dat); return its MD5."""
    raw = path.parent / "zip-src"
    write_raw_ml1m(raw)
    with zipfile.ZipFile(path, "w") as z:
        for name in ("ratings.dat", "movies.dat", "users.dat"):
            z.write(raw / name, f"ml-1m/{name}")
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_no_output(data_path):
    """Nothing half-written: no .inter and no leftover temp folder."""
    assert not list(Path(data_path).rglob("*.inter"))
    assert not [p for p in Path(data_path).iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("data")
    write_raw_ml1m(data_path / "ml-1m")
    assert prepare_ml1m(str(data_path), url="http://127.0.0.1:9/unused.zip", show_progress=False) == str(
        data_path / "ml-1m"
    )
    return data_path


# ---------------------------------------------------------------- MovieLens-1M conversion


@needs_ml1m_meta
def test_ml1m_conversion_of_real_metadata(ml1m):
    folder = ml1m / "ml-1m"
    inter, items, users = (read_rows(folder / f"ml-1m.{s}") for s in ("inter", "item", "user"))
    assert inter[0] == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert items[0] == ["item_id:token", "movie_title:token_seq", "release_year:token", "genre:token_seq"]
    assert users[0] == ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"]
    assert (len(inter) - 1, len(items) - 1, len(users) - 1) == (N_USERS * PER_USER, 3883, 6040)

    by_id = {row[0]: row[1:] for row in items[1:]}
    assert by_id["73"] == ["Misérables, Les", "1995", "Drama Musical"]  # ISO-8859-1 decoded, year split off
    assert by_id["1"] == ["Toy Story", "1995", "Animation Children's Comedy"]
    assert by_id["541"] == ["Blade Runner", "1982", "Film-Noir Sci-Fi"]
    assert by_id["570"][0] == "Slingshot, The (Kådisbellan )"  # only the trailing (year) goes
    assert users[1] == ["1", "1", "F", "10", "48067"]
    assert all(len(row) == 4 for row in items)
    validate_atomic_files(str(ml1m), "ml-1m")


@needs_ml1m_meta
def test_ml1m_prepared_twice_is_a_no_op(ml1m):
    inter = ml1m / "ml-1m" / "ml-1m.inter"
    before = inter.stat().st_mtime_ns
    prepare_ml1m(str(ml1m), url="http://127.0.0.1:9/unused.zip", show_progress=False)
    assert inter.stat().st_mtime_ns == before


@needs_ml1m_meta
def test_ml1m_loads_in_recbole(ml1m):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(
        model="SASRec",
        dataset="ml-1m",
        config_dict={
            "data_path": str(ml1m),
            "train_neg_sample_args": None,
            "load_col": {
                "inter": ["user_id", "item_id", "rating", "timestamp"],
                "item": ["item_id", "movie_title", "release_year", "genre"],
            },
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
        },
    )
    dataset = create_dataset(config)
    # ids are counted with padding (id 0); items include every movie of ml-1m.item, rated or not
    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (N_USERS + 1, 3883 + 1, N_USERS * PER_USER)
    iid = dataset.token2id("item_id", "73")
    words = [dataset.field2id_token["movie_title"][t] for t in dataset.item_feat["movie_title"][iid] if t]
    assert " ".join(words) == "Misérables, Les"
    genres = [dataset.field2id_token["genre"][t] for t in dataset.item_feat["genre"][dataset.token2id("item_id", "1")]]
    assert "Children's" in genres


# ---------------------------------------------------------------- MovieLens-1M download


@needs_ml1m_meta
def test_ml1m_download_from_file_url(tmp_path):
    zip_path = tmp_path / "mirror" / "ml-1m.zip"
    zip_path.parent.mkdir()
    md5 = make_zip(zip_path)
    data_path = tmp_path / "data"
    prepare_ml1m(str(data_path), url=zip_path.as_uri(), md5=md5, show_progress=False)
    assert sorted(os.listdir(data_path)) == ["ml-1m"]  # no temp folder left over
    assert sorted(os.listdir(data_path / "ml-1m")) == ["ml-1m.inter", "ml-1m.item", "ml-1m.user"]
    assert len(read_rows(data_path / "ml-1m" / "ml-1m.inter")) == N_USERS * PER_USER + 1


@needs_ml1m_meta
def test_ml1m_download_over_http(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = make_zip(mirror / "ml-1m.zip")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(mirror)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ml-1m.zip"
        folder = prepare_ml1m(str(tmp_path / "data"), url=url, md5=md5, show_progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert os.path.isfile(os.path.join(folder, "ml-1m.item"))


@needs_ml1m_meta
def test_ml1m_wrong_md5_leaves_nothing(tmp_path):
    zip_path = tmp_path / "ml-1m.zip"
    make_zip(zip_path)
    data_path = tmp_path / "data"
    with pytest.raises(LumosError, match="MD5"):
        prepare_ml1m(str(data_path), url=zip_path.as_uri(), md5="0" * 32, show_progress=False)
    assert_no_output(data_path)


def test_ml1m_offline_names_the_folder(tmp_path):
    with pytest.raises(LumosError) as err:
        prepare_ml1m(str(tmp_path), url="http://127.0.0.1:9/ml-1m.zip", show_progress=False)
    message = str(err.value)
    assert str(tmp_path / "ml-1m") in message and "ml-1m.zip" in message and "\n" not in message
    assert_no_output(tmp_path)


@needs_ml1m_meta
def test_ml1m_zip_put_in_place_by_the_user(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    make_zip(tmp_path / "ml-1m" / "ml-1m.zip")
    prepare_ml1m(str(tmp_path), url="http://127.0.0.1:9/unused.zip", show_progress=False)
    assert (tmp_path / "ml-1m" / "ml-1m.inter").is_file()


# ---------------------------------------------------------------- one-line-per-user sequences


def test_sequence_file_conversion(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("1 5 3 9\n2 3\n\n10 7 7 1\n")
    path = convert_sequence_file(str(src), str(tmp_path), "toy")
    assert path == str(tmp_path / "toy" / "toy.inter")
    assert read_rows(path) == [
        ["user_id:token", "item_id:token", "timestamp:float"],
        ["1", "5", "0"], ["1", "3", "1"], ["1", "9", "2"],
        ["2", "3", "0"],
        ["10", "7", "0"], ["10", "7", "1"], ["10", "1", "2"],
    ]  # fmt: skip
    validate_atomic_files(str(tmp_path), "toy")


@pytest.mark.parametrize(
    "text, line",
    [("1 2 3\n2 4 x\n", 2), ("1 2\n2 4\n3\n", 3), ("1 2.5\n", 1), ("1 2\n1 3\n", 2)],
    ids=["not-an-integer", "user-without-items", "float-item", "user-twice"],
)
def test_sequence_file_malformed(tmp_path, text, line):
    src = tmp_path / "seq.txt"
    src.write_text(text)
    with pytest.raises(LumosError, match=f"seq.txt line {line}:"):
        convert_sequence_file(str(src), str(tmp_path / "data"), "toy")
    assert_no_output(tmp_path / "data")


@needs_beauty
def test_real_beauty_through_ensure_dataset(tmp_path):
    (tmp_path / "beauty").mkdir()
    shutil.copyfile(BEAUTY, tmp_path / "beauty" / "Beauty.txt")
    start = time.perf_counter()
    ensure_dataset("beauty", str(tmp_path), show_progress=False)
    print(f"Beauty.txt converted and validated in {time.perf_counter() - start:.2f} s")
    rows = read_rows(tmp_path / "beauty" / "beauty.inter")[1:]
    assert len({r[0] for r in rows}) == 22363
    assert len({r[1] for r in rows}) == 12101
    assert len(rows) == 198502


# ---------------------------------------------------------------- atomic-file validation


GOOD = "user_id:token\titem_id:token\trating:float\ttags:token_seq\n1\t10\t4.5\ta b\n2\t11\t\t\n"


def write_inter(tmp_path, text, name="toy"):
    (tmp_path / name).mkdir()
    (tmp_path / name / f"{name}.inter").write_text(text, encoding="utf-8")


def test_good_atomic_file_passes(tmp_path):
    write_inter(tmp_path, GOOD)
    validate_atomic_files(str(tmp_path), "toy")
    ensure_dataset("toy", str(tmp_path))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("user_id\titem_id:token\n1\t2\n", "line 1: header field 'user_id'"),
        ("user_id:int\titem_id:token\n1\t2\n", "line 1: header field 'user_id:int'"),
        ("user_id:token\tuser_id:token\n1\t2\n", "line 1: field 'user_id' appears twice"),
        (GOOD + "3\t12\t1.0\n", "line 4: 3 tab-separated columns, the header has 4"),
        (GOOD.replace("4.5", "four"), "line 2: 'four' in float column 'rating:float'"),
    ],
    ids=["no-type", "unknown-type", "duplicate-name", "missing-column", "not-a-float"],
)
def test_bad_atomic_file(tmp_path, text, expected):
    write_inter(tmp_path, text)
    with pytest.raises(LumosError, match=expected) as err:
        ensure_dataset("toy", str(tmp_path))
    assert "toy.inter" in str(err.value) and "\n" not in str(err.value)


def test_bad_item_file_is_checked_too(tmp_path):
    write_inter(tmp_path, GOOD)
    (tmp_path / "toy" / "toy.item").write_text("item_id:token\tyear:float\n10\t19x5\n")
    with pytest.raises(LumosError, match=r"toy\.item line 2"):
        validate_atomic_files(str(tmp_path), "toy")


def test_unknown_dataset_lists_built_ins(tmp_path):
    with pytest.raises(LumosError, match="Unknown dataset 'nope'.*built in: ml-100k, ml-1m"):
        ensure_dataset("nope", str(tmp_path))


def test_ml100k_is_left_to_recbole(tmp_path):
    ensure_dataset("ml-100k", str(tmp_path))
    assert not os.listdir(tmp_path)
