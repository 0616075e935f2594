"""The common one-line-per-user sequence format (`user item item ...`, oldest first) as a RecBole .inter file."""
import os

from recbole_lumos.data.staging import staged_output
from recbole_lumos.errors import LumosError


def convert_sequence_file(src_path, data_path, name):
    """Write data_path/name/name.inter and return its path.

    The timestamp is the item's position in the user's sequence, so RecBole's chronological `TO` order keeps it.
    Undecodable bytes become U+FFFD and then fail the integer check with their line number.
    """
    folder = os.path.join(data_path, name)
    with staged_output(folder) as tmp:
        with (
            open(src_path, encoding="utf-8", errors="replace") as src,
            open(os.path.join(tmp, f"{name}.inter"), "w", encoding="utf-8") as out,
        ):
            out.write("user_id:token\titem_id:token\ttimestamp:float\n")
            seen = set()
            for lineno, line in enumerate(src, 1):
                tokens = line.split()
                if not tokens:
                    continue  # blank lines carry no user
                try:
                    user, *items = (int(t) for t in tokens)
                except ValueError:
                    raise LumosError(
                        f"{src_path} line {lineno}: not all integers; each line must be 'user item item ...'"
                    ) from None
                if not items:
                    raise LumosError(f"{src_path} line {lineno}: user {user} has no items; drop that line")
                if user in seen:  # a second line would interleave positions with the first
                    raise LumosError(f"{src_path} line {lineno}: user {user} appears again; merge the lines")
                seen.add(user)
                out.writelines(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(items))
    return os.path.join(folder, f"{name}.inter")
