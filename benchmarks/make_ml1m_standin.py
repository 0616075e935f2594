"""Build a stand-in for MovieLens-1M's ratings.dat over the real movies.dat/users.dat (GroupLens is out of reach).

    python benchmarks/make_ml1m_standin.py                     # 6,040 users, 1,000,209 ratings -> dataset/ml-1m/
    python benchmarks/make_ml1m_standin.py --users=40 --data_path=/tmp/data   # a small one (tests)

Writes <data_path>/ml-1m/{ratings,movies,users}.dat in GroupLens' format (`UserID::MovieID::Rating::Timestamp`;
movies.dat and users.dat are copied unchanged, ISO-8859-1) and removes a stale ml-1m.inter/.item/.user there, so
the ml-1m converter (recbole_lumos/data/movielens.py) converts the stand-in on the next run, offline.

How the ratings are drawn (numbers are ml-1m's where known; the rest are choices):
- history lengths are heavy-tailed (20 + log-normal), at least 20, the mean that --ratings sets (ml-1m: 165.6);
- movie popularity is Zipf-like over a random ranking of the movies;
- each user has two genre tastes (Dirichlet over the 18 genres) and drifts from the first to the second over the
  history; movies are rated in sessions of SESSION, each leaning to one genre drawn from the current taste; a
  movie's weight is popularity x (how well its genres fit the session's taste)^TASTE_POWER, drawn without
  replacement, same-genre movies next to each other inside a session. So the next item depends on the user's
  genres and on what came just before: sequential and semantic signal;
- timestamps increase per user (seconds apart inside a session, days between sessions, from 2000-04-25);
- ratings 1-5 are higher for movies that fit the taste.
This is synthetic data: figures measured on it are speed figures, not accuracy figures of MovieLens-1M.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_META = os.path.join(os.path.dirname(REPO), "shared", "datasets", "ml-1m-meta")
ML1M_USERS, ML1M_RATINGS = 6040, 1_000_209
MIN_HISTORY, MAX_HISTORY = 20, 2314  # ml-1m's shortest and longest history
ZIPF_EXPONENT, ZIPF_OFFSET = 1.0, 40  # popularity of the movie ranked r: 1 / (r + offset)^exponent
TASTE_CONCENTRATION, TASTE_POWER = 2.0, 2.0
SESSION = 10  # movies per rating session
SESSION_FOCUS = 0.5  # share of a session's taste given to one genre drawn from the user's taste
RATING_CUTS = (-1.589, -0.978, -0.189, 0.752)  # N(0, 1) quantiles at ml-1m's cumulative rating shares
START, END = 956_620_800, 1_046_476_800  # 2000-04-25 .. 2003-03-01, ml-1m's span


def read_dat(path, n_fields):
    with open(path, encoding="iso-8859-1") as f:
        rows = [line.rstrip("\r\n").split("::") for line in f if line.strip()]
    bad = next((i for i, row in enumerate(rows, 1) if len(row) != n_fields), None)
    if bad:
        raise SystemExit(f"error: {path} line {bad}: expected {n_fields} '::'-separated fields")
    return rows


def history_lengths(rng, n_users, n_ratings, cap):
    """Heavy-tailed lengths in [MIN_HISTORY, cap] summing to exactly n_ratings."""
    extra = rng.lognormal(0.0, 1.1, n_users)
    extra *= (n_ratings - MIN_HISTORY * n_users) / extra.sum()
    lengths = np.minimum(MIN_HISTORY + np.floor(extra).astype(np.int64), cap)
    while (diff := n_ratings - int(lengths.sum())) != 0:  # rounding and the cap: spread the rest one by one
        step = 1 if diff > 0 else -1
        eligible = np.flatnonzero(lengths < cap if step > 0 else lengths > MIN_HISTORY)
        lengths[rng.choice(eligible, size=min(abs(diff), len(eligible)), replace=False)] += step
    return lengths


def user_history(rng, length, popularity, genres, alpha):
    """(movie indices, taste fit of each) in the order the user rates them."""
    first, last = rng.dirichlet(alpha), rng.dirichlet(alpha)
    log_pop = np.log(popularity)
    taken = np.zeros(len(popularity), dtype=bool)
    movies, fits = [], []
    n_sessions = -(-length // SESSION)
    for s in range(n_sessions):
        t = s / max(n_sessions - 1, 1)
        taste = (1 - t) * first + t * last
        focus = np.eye(len(taste))[rng.choice(len(taste), p=taste)]  # the genre this session leans to
        taste = (1 - SESSION_FOCUS) * taste + SESSION_FOCUS * focus
        fit = genres @ taste  # mean taste share of the movie's genres
        keys = log_pop + TASTE_POWER * np.log(fit + 1e-3) + rng.gumbel(size=len(fit))
        keys[taken] = -np.inf
        size = min(SESSION, length - s * SESSION)
        chosen = np.argpartition(-keys, size)[:size]  # Gumbel top-k = drawing without replacement by weight
        taken[chosen] = True
        main_genre = np.argmax(genres[chosen] * taste, axis=1)  # same-genre movies side by side
        chosen = chosen[np.lexsort((rng.random(size), main_genre))]
        movies.append(chosen)
        fits.append(fit[chosen] + 1e-3)
    return np.concatenate(movies), np.concatenate(fits)


def timestamps(rng, length):
    """Strictly increasing: seconds to minutes inside a session, about three days between sessions."""
    gaps = 1 + rng.exponential(40.0, length).astype(np.int64)
    gaps[::SESSION] += rng.exponential(3 * 86_400, len(gaps[::SESSION])).astype(np.int64)
    stamps = np.cumsum(gaps)
    start = rng.integers(START, max(START + 1, END - int(stamps[-1])))
    return start + stamps


def ratings_for(rng, fits):
    """1-5 with ml-1m's shares (5.6 / 10.8 / 26.1 / 34.9 / 22.6 %), higher for movies that fit the user's taste."""
    fit = np.log(fits)
    score = 0.6 * (fit - fit.mean()) / (fit.std() + 1e-9) + 0.8 * rng.normal(size=len(fits))  # about N(0, 1)
    return 1 + np.searchsorted(RATING_CUTS, score)


def make_standin(meta, data_path, n_users, n_ratings, seed):
    movies, users = read_dat(os.path.join(meta, "movies.dat"), 3), read_dat(os.path.join(meta, "users.dat"), 5)
    if not 1 <= n_users <= len(users):
        raise SystemExit(f"error: --users must be between 1 and {len(users)} (users.dat), got {n_users}")
    cap = min(MAX_HISTORY, len(movies))
    if not MIN_HISTORY * n_users <= n_ratings <= cap * n_users:
        raise SystemExit(f"error: --ratings must be between {MIN_HISTORY} and {cap} per user, got {n_ratings}")
    rng = np.random.default_rng(seed)
    names = sorted({g for _, _, gs in movies for g in gs.split("|")})
    genres = np.array([[g in gs.split("|") for g in names] for _, _, gs in movies], dtype=np.float64)
    genres /= genres.sum(axis=1, keepdims=True)
    alpha = TASTE_CONCENTRATION * genres.sum(axis=0) / genres.sum()  # common genres are liked more often
    popularity = 1.0 / (rng.permutation(len(movies)) + ZIPF_OFFSET) ** ZIPF_EXPONENT
    movie_ids = np.array([int(m) for m, _, _ in movies])
    lengths = history_lengths(rng, n_users, n_ratings, cap)

    folder = os.path.join(data_path, "ml-1m")
    os.makedirs(folder, exist_ok=True)
    for stale in ("ml-1m.inter", "ml-1m.item", "ml-1m.user"):  # converted from an earlier ratings.dat
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    movie_counts, rating_counts = np.zeros(len(movies), dtype=np.int64), np.zeros(6, dtype=np.int64)
    with open(os.path.join(folder, "ratings.dat.tmp"), "w", encoding="iso-8859-1") as out:
        for (user, *_), length in zip(users, lengths):
            chosen, fits = user_history(rng, int(length), popularity, genres, alpha)
            ratings = ratings_for(rng, fits)
            movie_counts[chosen] += 1
            rating_counts += np.bincount(ratings, minlength=6)
            rows = zip(movie_ids[chosen], ratings, timestamps(rng, int(length)))
            out.writelines(f"{user}::{movie}::{rating}::{stamp}\n" for movie, rating, stamp in rows)
    os.replace(os.path.join(folder, "ratings.dat.tmp"), os.path.join(folder, "ratings.dat"))
    for name in ("movies.dat", "users.dat"):
        shutil.copyfile(os.path.join(meta, name), os.path.join(folder, name))  # copyfile: sources are read-only
    summary = (
        f"{len(lengths):,} users, {lengths.sum():,} ratings, {int((movie_counts > 0).sum()):,} movies rated; "
        f"history length min {lengths.min()} median {int(np.median(lengths))} mean {lengths.mean():.1f} "
        f"max {lengths.max()}; most rated movie {movie_counts.max():,} ratings; ratings 1-5: "
        + " ".join(f"{share:.1%}" for share in rating_counts[1:] / lengths.sum())
    )
    return folder, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=ML1M_USERS, help="the first N users of users.dat")
    parser.add_argument("--ratings", type=int, default=None,
                        help=f"total ratings (default: ml-1m's mean per user, {ML1M_RATINGS:,} for all users)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--meta", default=DEFAULT_META, help="folder with the real movies.dat and users.dat")
    parser.add_argument("--data_path", default=os.path.join(REPO, "dataset"), help="RecBole data_path")
    args = parser.parse_args(argv)
    n_ratings = args.ratings if args.ratings is not None else round(args.users * ML1M_RATINGS / ML1M_USERS)
    for name in ("movies.dat", "users.dat"):
        if not os.path.isfile(os.path.join(args.meta, name)):
            raise SystemExit(f"error: {name} not found in {args.meta}: pass --meta=<folder with movies.dat, users.dat>")
    started = time.perf_counter()
    folder, summary = make_standin(args.meta, args.data_path, args.users, n_ratings, args.seed)
    elapsed = time.perf_counter() - started
    print(summary)
    print(f"wrote {folder}/ratings.dat (seed {args.seed}) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
