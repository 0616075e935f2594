"""MovieLens-1M: fetch GroupLens' official zip (or use files the user put in place) and write RecBole atomic files.

The output matches RecBole's published ml-1m atomic files, so configs written for RecBole's ml-1m work as is.
"""
import hashlib
import os
import re
import shutil
import urllib.request
import zipfile

from tqdm import tqdm

from recbole_lumos.data.staging import field_text, staged_output
from recbole_lumos.errors import LumosError

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"  # published by GroupLens next to the zip
RAW_FILES = ("ratings.dat", "movies.dat", "users.dat")
TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def prepare_ml1m(data_path, url=ML1M_URL, md5=ML1M_MD5, show_progress=True):
    """Make sure data_path/ml-1m holds ml-1m.{inter,item,user}; return that folder."""
    folder = os.path.join(data_path, "ml-1m")
    if os.path.isfile(os.path.join(folder, "ml-1m.inter")):
        return folder
    with staged_output(folder) as tmp:
        if all(os.path.isfile(os.path.join(folder, f)) for f in RAW_FILES):
            raw = folder
        else:
            zip_path = os.path.join(folder, "ml-1m.zip")
            if not os.path.isfile(zip_path):
                zip_path = os.path.join(tmp, "raw", "ml-1m.zip")  # scratch: dropped with the temp folder
                _download(url, zip_path, md5, folder, show_progress)
            raw = os.path.join(tmp, "raw")
            _extract(zip_path, raw)
        _convert(raw, tmp)
    return folder


def _download(url, dest, md5, folder, show_progress):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="ml-1m.zip", disable=not show_progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise LumosError(
            f"Could not download {url} ({e}); put ml-1m.zip, or ratings.dat, movies.dat and users.dat, "
            f"into {folder} and run again"
        ) from None
    if digest.hexdigest() != md5:
        raise LumosError(
            f"{url} downloaded with MD5 {digest.hexdigest()}, expected {md5}; run again, or put the official "
            f"ml-1m.zip into {folder}"
        )


def _extract(zip_path, dest):
    """Extract the three .dat files, wherever they sit in the zip (the official one has them under ml-1m/)."""
    os.makedirs(dest, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as z:
            members = {os.path.basename(m): m for m in z.namelist()}
            missing = [f for f in RAW_FILES if f not in members]
            if missing:
                raise LumosError(f"{zip_path} lacks {', '.join(missing)}; use GroupLens' official ml-1m.zip")
            for f in RAW_FILES:
                with z.open(members[f]) as src, open(os.path.join(dest, f), "wb") as out:
                    shutil.copyfileobj(src, out)
    except zipfile.BadZipFile:
        raise LumosError(f"{zip_path} is not a valid zip file; delete it and run again") from None


def _read_dat(path, n_fields):
    """Yield the `::`-separated fields of each line; the .dat files are ISO-8859-1."""
    with open(path, encoding="iso-8859-1") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("::")
            if len(fields) != n_fields:
                raise LumosError(
                    f"{path} line {lineno}: expected {n_fields} '::'-separated fields, got {len(fields)}; "
                    "use the unmodified GroupLens file"
                )
            yield fields


def _convert(raw, out):
    with open(os.path.join(out, "ml-1m.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, timestamp in _read_dat(os.path.join(raw, "ratings.dat"), 4):
            f.write(f"{user}\t{item}\t{rating}\t{timestamp}\n")
    with open(os.path.join(out, "ml-1m.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n")
        for item, title, genres in _read_dat(os.path.join(raw, "movies.dat"), 3):
            match = TITLE_YEAR.match(title)
            title, year = (match.group(1), match.group(2)) if match else (title, "")
            f.write(f"{item}\t{field_text(title)}\t{year}\t{field_text(genres.replace('|', ' '))}\n")
    with open(os.path.join(out, "ml-1m.user"), "w", encoding="utf-8") as f:
        f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        for user, gender, age, occupation, zip_code in _read_dat(os.path.join(raw, "users.dat"), 5):
            f.write(f"{user}\t{age}\t{gender}\t{occupation}\t{zip_code}\n")
