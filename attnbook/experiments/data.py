"""The character-level corpus (chapters 7 and 8): tiny Shakespeare.

The loader looks in ``$ATTNBOOK_DATA``, then ``~/.cache/attnbook``, and only
then downloads the file from its public source; the SHA-256 checksum is
verified every time, so a truncated or altered file fails loudly.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch

from attnbook.checks import check_positive_int

__all__ = ["TINYSHAKESPEARE", "data_dirs", "load_tinyshakespeare", "CharCorpus"]

TINYSHAKESPEARE = {
    "filename": "tinyshakespeare.txt",
    "url": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "bytes": 1_115_394,
}


def data_dirs() -> list[Path]:
    """Folders searched for data files, in order: ``$ATTNBOOK_DATA``, then the cache folder."""
    dirs = []
    if os.environ.get("ATTNBOOK_DATA"):
        dirs.append(Path(os.environ["ATTNBOOK_DATA"]).expanduser())
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attnbook")
    return dirs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_tinyshakespeare(download: bool = True) -> str:
    """The corpus as a string (1,115,394 characters), checksum verified.

    Raises ``FileNotFoundError`` if it is nowhere and ``download`` is False,
    ``ValueError`` if a file is found whose checksum is wrong.
    """
    spec = TINYSHAKESPEARE
    for folder in data_dirs():
        path = folder / spec["filename"]
        if path.exists():
            digest = _sha256(path)
            if digest != spec["sha256"]:
                raise ValueError(
                    f"{path} is corrupt: sha256 {digest} != expected {spec['sha256']}; delete it "
                    "or fix ATTNBOOK_DATA"
                )
            return path.read_text(encoding="utf-8")
    searched = ", ".join(str(d) for d in data_dirs())
    if not download:
        raise FileNotFoundError(
            f"{spec['filename']} not found in {searched}; set ATTNBOOK_DATA to its folder"
        )
    cache = data_dirs()[-1]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / (spec["filename"] + ".part")
    try:
        urllib.request.urlretrieve(spec["url"], tmp)
    except OSError as err:
        raise FileNotFoundError(
            f"{spec['filename']} not found in {searched} and the download from {spec['url']} "
            f"failed ({err})"
        ) from err
    if _sha256(tmp) != spec["sha256"]:
        tmp.unlink()
        raise ValueError(f"downloaded {spec['url']} has the wrong checksum; not using it")
    tmp.rename(cache / spec["filename"])
    return (cache / spec["filename"]).read_text(encoding="utf-8")


class CharCorpus:
    """A character-level corpus: vocabulary, encode/decode,
    the nanoGPT 90/10 split, random batches."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not isinstance(text, str) or len(text) < 2:
            raise ValueError("text must be a string of at least 2 characters")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        data = torch.tensor(self.encode(text), dtype=torch.long)
        cut = int(len(data) * (1 - val_fraction))
        self.train, self.val = data[:cut], data[cut:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        unknown = set(s) - set(self.stoi)
        if unknown:
            raise ValueError(f"s contains characters outside the vocabulary: {sorted(unknown)[:5]}")
        return [self.stoi[c] for c in s]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def get_batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device="cpu",
    ):
        """Random windows: x: (batch_size, block_size) token ids, y: x shifted by one."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        data = self.train if split == "train" else self.val
        batch_size = check_positive_int("batch_size", batch_size)
        block_size = check_positive_int("block_size", block_size)
        if block_size >= len(data):
            raise ValueError(
                f"block_size must be < {len(data)} (the {split} split length), got {block_size}"
            )
        ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        x = torch.stack([data[i : i + block_size] for i in ix.tolist()])
        y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix.tolist()])
        return x.to(device), y.to(device)
