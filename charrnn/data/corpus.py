"""Corpora: find the text, encode it once into a memory-mapped array of character ids, split it.

Encoding reads the file in chunks with an incremental decoder, so a multi-byte character that
straddles a chunk boundary is decoded whole, and a corpus of any size is encoded in bounded
memory. The result is cached by content hash: a second run on the same file maps the cached
array instead of encoding again, and a file that changed gets a new entry.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data import recipes
from charrnn.data.concat import BINARY_SNIFF_BYTES, concatenate, folder_files, read_folder
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.fileio import (
    UnsafeFile,
    atomic_write,
    check_regular,
    loads_json,
    read_regular,
    user_folder,
)
from charrnn.vocab import MAX_CODE_POINT, Vocab, code_points, id_dtype

CACHE_FORMAT = 2  # 2: an entry records the corpus digest, its length and its own checksum
CHUNK_BYTES = 1 << 20  # 1 MiB per decode step: bounded memory, and the fastest we measured
MAX_META_BYTES = 64 << 20  # an entry's record: its vocabulary, at most every character
# (100 MB encoded in 0.96 s with 1 MiB chunks, 1.50 s with 16 MiB ones)


def cache_dir() -> Path:
    """Where encoded corpora live: $CHARRNN_CACHE_DIR, else the platform's user cache folder."""
    return user_folder("CHARRNN_CACHE_DIR", "cache")


def resolve(name_or_path: str, include=(), exclude=(), say=None, warn=None
            ) -> tuple[str, Path]:
    """(run name, file) for a CORPUS argument: an existing file or folder wins over a corpus
    name; a folder becomes one text (cached, keyed by its files' contents); a named corpus
    that is not on this machine yet is fetched first (saying so)."""
    path = Path(name_or_path).expanduser()
    known = recipes.load()
    if path.exists() or name_or_path not in known:
        if path.is_dir():
            return path.resolve().name or "corpus", folder_corpus(path, include, exclude, warn)
        return path.stem or "corpus", path
    recipe = known[name_or_path]
    dest = recipes.path_of(recipe)  # where `corpus get` keeps it too: built once, in one place
    if not dest.exists():
        if say is not None:
            say(f"{recipe.name} is not on this machine yet: "
                + (f"downloading it from {recipe.url}" if recipe.url else "building it"))
        progress = recipes.Progress(recipe.name)
        try:
            recipes.get(recipe, warn=warn, progress=progress)
        finally:
            progress.close()
    return name_or_path, dest


def folder_corpus(root: Path, include=(), exclude=(), warn=None) -> Path:
    """The text files under `root` as one corpus file in the cache (see charrnn/data/concat.py)."""
    paths = folder_files(root, include, exclude)
    if not paths:
        chosen = " matching --include / --exclude" if include or exclude else ""
        raise CharrnnError(f"folder {root} holds no files{chosen}; give a folder of text files "
                           "(or change --include)")
    h = hashlib.blake2b(digest_size=16)
    for rel in paths:
        h.update(f"{rel}\0{file_digest(root / rel)}\0".encode("utf-8", "surrogateescape"))
    dest = cache_dir() / "folders" / f"{h.hexdigest()}.txt"
    if not dest.exists():
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                tally = concatenate(read_folder(root, paths), out)
            if not tally.kept:
                raise CharrnnError(f"folder {root} holds no text files: {tally.skipped()}")
            if tally.skipped() and warn is not None:
                warn(tally.skipped())
        atomic_write(dest, write, private=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Encoding


class DigestMismatch(CharrnnError):
    """The file is not the text that was expected (a resumed run's corpus has changed)."""

    def __init__(self, path: Path):
        super().__init__(f"corpus {path} is not the text it was")
        self.path = path


def _check_file(path: Path) -> int:
    if not path.exists():
        raise CharrnnError(f"corpus {path} does not exist; give a text file, a folder, or a "
                           "corpus name (see `charrnn corpus list`)")
    if not path.is_file():
        # a corpus is read twice (counted, then encoded): a pipe or a device cannot be
        raise CharrnnError(f"corpus {path} is not a regular file (a pipe or a device); save the "
                           "text to a file and train on that")
    size = path.stat().st_size
    if size == 0:
        raise CharrnnError(f"corpus {path} is empty; give a file with some text in it")
    return size


MAX_BYTES_PER_CHAR = 4  # UTF-8, UTF-16 with surrogates, UTF-32, GB 18030: 4 at most


def _too_large(size: int, characters, errors: str) -> bool:
    """Whether `size` bytes are more than any encoding spends on the recorded `characters`
    (a file of 200 GB named in a stranger's config for a text of 200,000 characters is not
    read through to find out); unknown with no count, or where undecodable bytes are dropped."""
    if isinstance(characters, bool) or not isinstance(characters, int) or characters < 0 or \
            errors == "ignore":
        return False
    return size > MAX_BYTES_PER_CHAR * characters + 4  # (+4: a byte-order mark)


def _chunks(path: Path, digest: hashlib.blake2b | None = None):
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            if digest is not None:
                digest.update(chunk)
            yield chunk


def _hasher():
    return hashlib.blake2b(digest_size=20)


def _decoded(path: Path, encoding: str, errors: str, digest: hashlib.blake2b | None = None):
    """Yield (byte offset of the chunk, code points) for each chunk of the file."""
    # utf-8-sig drops a leading byte-order mark, which is not part of the text
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    decoder = codecs.getincrementaldecoder(codec)(errors)
    offset = 0
    for chunk in itertools.chain(_chunks(path, digest), [b""]):  # b"": the final, flushing call
        pending = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            at = offset - pending + e.start
            raise CharrnnError(
                f"corpus {path} is not valid {encoding} at byte {at}; pass --encoding with the "
                "file's encoding, or --errors replace to go on with U+FFFD in its place") from None
        yield offset, code_points(text)
        offset += len(chunk)


def count_characters(path: Path, encoding: str = "utf-8", errors: str = "strict",
                     digest: hashlib.blake2b | None = None) -> np.ndarray:
    """How often each code point occurs in the file (an array indexed by code point)."""
    counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
    for _, cps in _decoded(path, encoding, errors, digest):
        if len(cps):
            counts[: int(cps.max()) + 1] += np.bincount(cps)
    return counts


def encode_file(path: Path, out: Path, encoding: str = "utf-8", errors: str = "strict",
                digest: str | None = None) -> tuple[Vocab, dict]:
    """Encode a text file into `out` (a .npy of ids) in two chunked passes; return its vocab
    and the entry's record (length, checksum). With `digest`, both passes must read that file:
    a corpus that changes while it is read is an error, never a cache entry."""
    first = _hasher()
    counts = count_characters(path, encoding, errors, first)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        raise CharrnnError(f"corpus {path} holds no characters; give a file with some text in it")
    vocab = Vocab.from_code_points(present)
    lut = np.zeros(int(present[-1]) + 1, dtype=id_dtype(len(vocab)))
    lut[present] = np.arange(len(present))
    second, checksum = _hasher(), _hasher()

    def write(tmp: Path) -> None:
        # plain writes, not a memory map: dirty mapped pages would count as this process's
        # memory, a gigabyte of it for a gigabyte of corpus
        header = {"descr": np.lib.format.dtype_to_descr(lut.dtype), "fortran_order": False,
                  "shape": (int(counts.sum()),)}
        changed = CharrnnError(f"corpus {path} changed while it was being read; train again "
                               "once nothing is writing to it")
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _, cps in _decoded(path, encoding, errors, second):
                if len(cps) and cps.max() >= len(lut):  # a character the first pass never saw
                    raise changed
                f.write(lut[cps].tobytes())
        if first.hexdigest() != second.hexdigest() or digest not in (None, first.hexdigest()):
            raise changed
        for _ in _chunks(tmp, checksum):
            pass

    atomic_write(out, write, private=True)
    return vocab, {"length": int(counts.sum()), "checksum": checksum.hexdigest()}


def file_digest(path: Path) -> str:
    h = _hasher()
    for _ in _chunks(path, h):
        pass
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The corpus a run trains on


@dataclass
class Corpus:
    """A text file encoded as character ids (a read-only memory map) with its vocabulary."""

    name: str
    path: Path
    digest: str
    vocab: Vocab
    ids: np.ndarray  # (N,) uint8/uint16/uint32
    source: str = ""  # the CORPUS argument it came from: a file, a folder or a corpus name

    def split(self, train_settings: dict) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) as a run with these training settings (config.json's "train")
        split this text."""
        train, val, _ = run_split(self.ids, train_settings.get("val_frac", 0.1),
                                  train_settings.get("test_frac", 0.0))
        return train, val


def split(ids: np.ndarray, val_frac: float, test_frac: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): contiguous; the last `test_frac` of the text is held out (never trained or
    validated on), and the `val_frac` before it is validation."""
    end = int(len(ids) * (1 - test_frac))
    cut = int(len(ids) * (1 - test_frac - val_frac))
    return ids[:cut], ids[cut:end]


def run_split(ids: np.ndarray, val_frac: float, test_frac: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train, val, whole): the split a run trains and validates on, the one place it is made.
    A text too small to give both parts two characters trains and validates on all of it
    (whole)."""
    train, val = split(ids, val_frac, test_frac)
    if len(val) < 2 or len(train) < 2:
        return ids, ids, True
    return train, val, False


def load(name_or_path: str, encoding: str = "utf-8", errors: str = "strict",
         sniff_binary: bool = True, digest: str | None = None, warn=None, say=None,
         include=(), exclude=(), characters: int | None = None) -> Corpus:
    """Find, check and encode a corpus (or map its cached encoding). With `digest`, the file
    must be that text (DigestMismatch otherwise), checked before it is encoded or shown; with
    `characters` too (the length the run recorded), a file too large to hold that many is
    refused before a byte of it is read."""
    name, path = resolve(name_or_path, include, exclude, say, warn)
    size = _check_file(path)
    if digest is not None and _too_large(size, characters, errors):
        raise DigestMismatch(path)
    if sniff_binary:
        with open(path, "rb") as f:
            if b"\0" in f.read(BINARY_SNIFF_BYTES):
                raise CharrnnError(f"corpus {path} looks binary (it contains NUL bytes); give a "
                                   "text file, or pass --encoding if it is UTF-16 or UTF-32 text")
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except (LookupError, TypeError) as e:
        raise CharrnnError(f"{e}; see --help for --encoding and --errors") from None
    found = file_digest(path)
    if digest is not None and found != digest:
        raise DigestMismatch(path)
    key = hashlib.blake2b(f"{CACHE_FORMAT}|{found}|{encoding}|{errors}".encode(),
                          digest_size=16).hexdigest()
    entry = cache_dir() / "encoded"
    ids_path, meta_path = entry / f"{key}.npy", entry / f"{key}.json"
    cached = _read_entry(ids_path, meta_path, found)
    if cached is None:
        try:
            cached = _encode_entry(path, ids_path, meta_path, found, encoding, errors, warn)
        except OSError as e:
            raise CharrnnError(f"{describe_os_error(e, 'write', advice=False)}: the cache of "
                               f"encoded corpora; set CHARRNN_CACHE_DIR to a folder you can "
                               "write to") from None
    vocab, ids = cached
    return Corpus(name=name, path=path, digest=found, vocab=vocab, ids=ids,
                  source=str(name_or_path))


def _encode_entry(path: Path, ids_path: Path, meta_path: Path, found: str, encoding: str,
                  errors: str, warn):
    """Encode the corpus into a new cache entry and read it back: (vocab, ids)."""
    entry = ids_path.parent
    if (meta_path.exists() or ids_path.exists()) and warn is not None:
        warn(f"the cached encoding of {path} in {entry} was damaged; encoding it again")
    meta_path.unlink(missing_ok=True)  # gone first: no moment with a meta over new ids
    vocab, record = encode_file(path, ids_path, encoding, errors, found)
    # the metadata is written last: its presence says the ids file is complete
    meta = json.dumps({"vocab": list(vocab.chars), "file": str(path), "digest": found,
                       **record}).encode("utf-8", "surrogatepass")
    atomic_write(meta_path, lambda tmp: tmp.write_bytes(meta), private=True)
    cached = _read_entry(ids_path, meta_path, found)
    if cached is None:
        raise CharrnnError(f"the encoding of {path} in {entry} could not be read back; check "
                           "that folder (or set CHARRNN_CACHE_DIR elsewhere)")
    return cached


def _read_entry(ids_path: Path, meta_path: Path, digest: str):
    """(vocab, ids) of a cache entry that is whole and is this corpus's, else None: an entry
    is checked against its own record (digest, length, dtype, checksum), never trusted."""
    try:
        meta = loads_json(read_regular(meta_path, MAX_META_BYTES).decode("utf-8"))
        vocab = Vocab(tuple(meta["vocab"]))
        if meta["digest"] != digest:
            return None
        check_regular(ids_path)
        ids = np.load(ids_path, mmap_mode="r")
        if ids.dtype != vocab.dtype or ids.shape != (meta["length"],):
            return None
        checksum = _hasher()
        for _ in _chunks(ids_path, checksum):
            pass
        if checksum.hexdigest() != meta["checksum"]:
            return None
        return vocab, ids
    except (OSError, ValueError, KeyError, TypeError, EOFError, UnsafeFile):
        return None
