"""The vocabulary: the sorted set of Unicode characters of a corpus, and vectorised encoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CODE_POINT = 0x10FFFF


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array, without a Python loop over characters."""
    # surrogatepass keeps lone surrogates (from surrogateescape or odd encodings) intact
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every character id."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


@dataclass(frozen=True)
class Vocab:
    """Characters in sorted code-point order; a character's id is its index."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("a vocabulary is a sorted list of distinct characters")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("every vocabulary entry must be a single character")

    @classmethod
    def from_code_points(cls, cps: np.ndarray) -> Vocab:
        return cls(tuple(chr(int(c)) for c in cps))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(len(self.chars))

    def lookup_table(self) -> np.ndarray:
        """A code point -> id table; -1 for characters outside the vocabulary."""
        cps = code_points("".join(self.chars))
        lut = np.full(int(cps.max()) + 1 if len(cps) else 1, -1, dtype=np.int64)
        lut[cps] = np.arange(len(cps))
        return lut

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, sorted."""
        known = set(self.chars)
        return sorted(set(text) - known)

    def describe_unknown(self, text: str) -> str | None:
        """'3 character(s) the model never saw: 'é' 'ß' '€'', or None when there are none."""
        unknown = self.unknown(text)
        if not unknown:
            return None
        shown = " ".join(repr(ch) for ch in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        return f"{len(unknown)} character(s) the model never saw: {shown}"

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text`; raises KeyError naming the characters not in the vocabulary."""
        cps = code_points(text)
        lut = self.lookup_table()
        inside = cps < len(lut)
        ids = np.full(len(cps), -1, dtype=np.int64)
        ids[inside] = lut[cps[inside]]
        if (ids < 0).any():
            raise KeyError(self.unknown(text))
        return ids.astype(self.dtype)

    def remap(self, ids: np.ndarray, source: Vocab) -> np.ndarray:
        """Ids of `source`'s characters as ids of this vocabulary, which holds them all."""
        index = {ch: i for i, ch in enumerate(self.chars)}
        lut = np.array([index[ch] for ch in source.chars], dtype=np.int64)
        return lut[np.asarray(ids, dtype=np.int64)].astype(self.dtype)

    def decode(self, ids) -> str:
        table = code_points("".join(self.chars))
        picked = table[np.asarray(ids, dtype=np.int64)]
        return picked.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
