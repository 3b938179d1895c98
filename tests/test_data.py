"""The corpus loader (chapters 7 and 8): checksum, clear errors, the 90/10 split, batches. Never
downloads."""

import hashlib
import urllib.request

import pytest
import torch

from attnbook.experiments import data
from attnbook.experiments.data import CharCorpus, data_dirs, load_tinyshakespeare

FAKE = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


@pytest.fixture
def fake_corpus(monkeypatch, tmp_path):
    """A private data folder and cache, a checksum that matches FAKE, and no network."""
    monkeypatch.setenv("ATTNBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(data.TINYSHAKESPEARE, "sha256", hashlib.sha256(FAKE.encode()).hexdigest())

    def no_network(url, filename):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    (tmp_path / "data").mkdir()
    return tmp_path


def test_data_dirs_order(fake_corpus):
    assert data_dirs() == [fake_corpus / "data", fake_corpus / "cache" / "attnbook"]


def test_loads_a_file_whose_checksum_matches(fake_corpus):
    (fake_corpus / "data" / "tinyshakespeare.txt").write_text(FAKE)
    assert load_tinyshakespeare(download=False) == FAKE


def test_corrupt_file_is_refused(fake_corpus):
    path = fake_corpus / "data" / "tinyshakespeare.txt"
    path.write_text(FAKE[:-1])  # one character short
    with pytest.raises(ValueError, match="corrupt: sha256") as err:
        load_tinyshakespeare(download=False)
    assert str(path) in str(err.value)


def test_corrupt_file_in_data_dir_is_not_skipped_for_the_cache(fake_corpus):
    (fake_corpus / "data" / "tinyshakespeare.txt").write_text("garbage")
    (fake_corpus / "cache" / "attnbook").mkdir(parents=True)
    (fake_corpus / "cache" / "attnbook" / "tinyshakespeare.txt").write_text(FAKE)
    with pytest.raises(ValueError, match="corrupt"):
        load_tinyshakespeare(download=False)


def test_cache_is_used_when_data_dir_has_no_file(fake_corpus):
    (fake_corpus / "cache" / "attnbook").mkdir(parents=True)
    (fake_corpus / "cache" / "attnbook" / "tinyshakespeare.txt").write_text(FAKE)
    assert load_tinyshakespeare(download=False) == FAKE


def test_missing_file_without_download(fake_corpus):
    with pytest.raises(
        FileNotFoundError, match="tinyshakespeare.txt not found in .*set ATTNBOOK_DATA"
    ):
        load_tinyshakespeare(download=False)


def test_missing_file_and_failed_download(fake_corpus):
    with pytest.raises(FileNotFoundError, match="download from .* failed"):
        load_tinyshakespeare(download=True)


def test_download_with_wrong_checksum_is_discarded(fake_corpus, monkeypatch):
    monkeypatch.setattr(
        urllib.request, "urlretrieve", lambda url, filename: open(filename, "w").write("tampered")
    )
    with pytest.raises(ValueError, match="wrong checksum"):
        load_tinyshakespeare(download=True)
    assert list((fake_corpus / "cache" / "attnbook").iterdir()) == []


def test_good_download_lands_in_the_cache(fake_corpus, monkeypatch):
    monkeypatch.setattr(
        urllib.request, "urlretrieve", lambda url, filename: open(filename, "w").write(FAKE)
    )
    assert load_tinyshakespeare(download=True) == FAKE
    assert (fake_corpus / "cache" / "attnbook" / "tinyshakespeare.txt").read_text() == FAKE


def test_real_corpus_checksum_when_present():
    try:
        text = load_tinyshakespeare(download=False)
    except FileNotFoundError:
        pytest.skip(
            "tiny Shakespeare is not on this machine (set ATTNBOOK_DATA); tests never download it"
        )
    assert len(text) == data.TINYSHAKESPEARE["bytes"]
    corpus = CharCorpus(text)
    assert corpus.vocab_size == 65
    assert (len(corpus.train), len(corpus.val)) == (
        1_003_854,
        111_540,
    )  # nanoGPT's prepare.py split


def test_char_corpus_roundtrip_and_split():
    corpus = CharCorpus(FAKE)
    assert corpus.chars == sorted(set(FAKE))
    assert corpus.decode(corpus.encode(FAKE)) == FAKE
    cut = int(len(FAKE) * 0.9)
    assert len(corpus.train) == cut and len(corpus.val) == len(FAKE) - cut
    assert corpus.decode(corpus.val) == FAKE[cut:]


def test_get_batch_shapes_targets_and_determinism():
    corpus = CharCorpus(FAKE)
    x, y = corpus.get_batch("train", 5, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.long
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    text = corpus.decode(corpus.train)
    for row_x, row_y in zip(x, y):
        assert corpus.decode(torch.cat([row_x, row_y[-1:]])) in text
    x2, _ = corpus.get_batch("train", 5, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x2)


def test_char_corpus_bad_input():
    with pytest.raises(ValueError, match="text must be a string"):
        CharCorpus("a")
    with pytest.raises(ValueError, match="val_fraction"):
        CharCorpus(FAKE, val_fraction=1.0)
    corpus = CharCorpus(FAKE)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        corpus.encode("Zebra")
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        corpus.get_batch("test", 2, 4)
    with pytest.raises(ValueError, match="block_size must be <"):
        corpus.get_batch("val", 2, len(corpus.val))
