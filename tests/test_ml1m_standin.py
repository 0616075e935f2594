"""benchmarks/make_ml1m_standin.py: a small stand-in ratings.dat that the ml-1m converter turns into a RecBole dataset.

Needs the real movies.dat/users.dat of ../shared/datasets/ml-1m-meta (skipped when absent).
"""
import subprocess
import sys
from pathlib import Path

import pytest
from recbole.data import create_dataset

from recbole_lumos.quick_start import build_config
from tests.test_datasets import ML1M_META as META
from tests.test_datasets import needs_ml1m_meta

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_ml1m_standin.py"
pytestmark = needs_ml1m_meta
USERS = 30
RATINGS = round(USERS * 1_000_209 / 6040)  # ml-1m's mean per user, the script's default


def make(data_path, *args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), f"--users={USERS}", f"--data_path={data_path}", f"--meta={META}", *args],
        capture_output=True, text=True,
    )


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("data")
    done = make(data_path)
    assert done.returncode == 0, done.stderr
    assert f"{USERS} users, {RATINGS:,} ratings" in done.stdout
    return data_path


def read_ratings(folder):
    with open(folder / "ratings.dat", encoding="iso-8859-1") as f:
        return [tuple(map(int, line.rstrip("\n").split("::"))) for line in f]


def test_ratings_file(standin):
    rows = read_ratings(standin / "ml-1m")
    assert len(rows) == RATINGS
    users = sorted({user for user, *_ in rows})
    assert users == list(range(1, USERS + 1))  # the first users of users.dat
    movies = {int(line.split("::")[0]) for line in (META / "movies.dat").read_text(encoding="iso-8859-1").splitlines()}
    for user in users:
        history = [(movie, rating, stamp) for u, movie, rating, stamp in rows if u == user]
        assert len(history) >= 20
        assert len({movie for movie, _, _ in history}) == len(history)  # each movie once per user
        stamps = [stamp for _, _, stamp in history]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # strictly increasing
        assert {movie for movie, _, _ in history} <= movies and {r for _, r, _ in history} <= {1, 2, 3, 4, 5}
    assert (standin / "ml-1m" / "movies.dat").read_bytes() == (META / "movies.dat").read_bytes()


def test_same_seed_same_file_other_seed_other_file(standin, tmp_path):
    assert make(tmp_path / "a").returncode == 0 and make(tmp_path / "b", "--seed=7").returncode == 0
    ours = (standin / "ml-1m" / "ratings.dat").read_bytes()
    assert (tmp_path / "a" / "ml-1m" / "ratings.dat").read_bytes() == ours
    assert (tmp_path / "b" / "ml-1m" / "ratings.dat").read_bytes() != ours


def test_converter_loads_the_standin(standin):
    config = build_config("FedSASRec", "ml-1m", config_dict={"data_path": str(standin), "state": "WARNING"})
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.inter_num) == (USERS, RATINGS)  # ids count padding
    assert dataset.item_num - 1 == 3883  # every movie of movies.dat, rated or not
    title = dataset.item_feat["movie_title"][dataset.token2id("item_id", "73")]
    assert " ".join(dataset.field2id_token["movie_title"][t] for t in title if t) == "Misérables, Les"  # ISO-8859-1


def test_a_new_standin_replaces_the_converted_files(standin, tmp_path):
    """Converted files of an earlier ratings.dat would hide the new one from the converter: they are removed."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ml-1m.inter").write_text("stale")
    assert make(tmp_path).returncode == 0
    assert not (folder / "ml-1m.inter").exists()


def test_impossible_request_is_one_line_and_non_zero(tmp_path):
    done = make(tmp_path, "--ratings=100")  # fewer than 20 per user
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["error: --ratings must be between 20 and 2314 per user, got 100"]
