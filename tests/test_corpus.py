import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINYSHAKESPEARE

from charrnn.data import corpus, recipes
from charrnn.errors import CharrnnError
from charrnn.vocab import Vocab

UNICODE = "Hello, 세계! Ça va? 🎉 naïve café — 日本語\n" * 20


def test_vocabulary_is_sorted_unicode_characters_not_bytes(write):
    c = corpus.load(str(write("u.txt", UNICODE)))
    assert list(c.vocab.chars) == sorted(set(UNICODE))
    assert "🎉" in c.vocab.chars and "세" in c.vocab.chars
    assert c.vocab.decode(c.ids) == UNICODE
    assert c.ids.dtype == np.uint8  # fits in a byte


def test_wide_vocabulary_uses_wider_ids(write):
    text = "".join(chr(0x4E00 + i) for i in range(400)) * 3
    c = corpus.load(str(write("cjk.txt", text)))
    assert len(c.vocab) == 400 and c.ids.dtype == np.uint16
    assert c.vocab.decode(c.ids) == text


def test_chunked_encoding_equals_whole_encoding_across_split_characters(write, monkeypatch,
                                                                        tmp_path):
    path = write("u.txt", UNICODE)
    whole = Vocab(tuple(sorted(set(UNICODE)))).encode(UNICODE)
    for chunk in (1, 2, 3, 5, 7, 64):  # boundaries fall inside 2-, 3- and 4-byte characters
        monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk)
        out = tmp_path / f"ids{chunk}.npy"
        vocab, record = corpus.encode_file(path, out)
        assert record["length"] == len(UNICODE)
        assert np.array_equal(np.load(out), whole)
        assert vocab.chars == tuple(sorted(set(UNICODE)))


def test_second_load_uses_the_cache_and_a_changed_file_is_encoded_again(write, monkeypatch):
    path = write("a.txt", "abcabc\n" * 50)
    first = corpus.load(str(path))
    calls = []
    real = corpus.encode_file
    monkeypatch.setattr(corpus, "encode_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = corpus.load(str(path))
    assert calls == [] and np.array_equal(first.ids, again.ids)
    path.write_text("xyzxyz\n" * 50)
    changed = corpus.load(str(path))
    assert len(calls) == 1 and "x" in changed.vocab.chars


def test_split_is_contiguous_with_the_last_tenth_for_validation(write):
    c = corpus.load(str(write("d.txt", "".join(chr(97 + i % 26) for i in range(1000)))))
    train, val = corpus.split(c.ids, 0.1)
    assert len(train) == 900 and len(val) == 100
    assert np.array_equal(np.concatenate([train, val]), c.ids)


@pytest.mark.skipif(not TINYSHAKESPEARE.exists(), reason="../shared/corpora is absent")
def test_tinyshakespeare_split_matches_nanogpt():
    c = corpus.load(str(TINYSHAKESPEARE))
    train, val = corpus.split(c.ids, 0.1)
    assert (len(train), len(val), len(c.vocab)) == (1_003_854, 111_540, 65)


def test_byte_order_mark_is_not_text(write):
    c = corpus.load(str(write("bom.txt", b"\xef\xbb\xbfhello\n")))
    assert c.vocab.decode(c.ids) == "hello\n"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\x7fELF\x00\x00\x01binary", "looks binary"),
    (b"good text \xff\xfe bad", "not valid utf-8 at byte 10"),
])
def test_bad_corpora_get_clear_errors(write, tmp_path, content, message):
    path = tmp_path / "missing.txt" if content is None else write("bad.txt", content)
    with pytest.raises(CharrnnError, match=message):
        corpus.load(str(path))


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CharrnnError, match="holds no files"):
        corpus.load(str(tmp_path))


def test_a_folder_trains_on_exactly_its_text_files_in_sorted_path_order(tmp_path):
    src = tmp_path / "src"
    (src / "lib" / "deep").mkdir(parents=True)
    (src / "b.c").write_text("int b;\n")
    (src / "a.h").write_text("#define A 1\n")
    (src / "lib" / "deep" / "z.c").write_text("int z;\n")
    (src / "lib" / "m.py").write_text("print('m')\n")
    (src / "notes.tex").write_text("\\section{x}\n")
    (src / "image.png").write_bytes(b"\x89PNG\x00\x00binary")
    (src / "latin1.c").write_bytes("caf\xe9".encode("latin-1"))
    (src / ".git").mkdir()
    (src / ".git" / "config").write_text("hidden\n")
    (src / "lib" / "loop").symlink_to(src, target_is_directory=True)  # a symlink loop
    warnings = []
    c = corpus.load(str(src), warn=warnings.append)
    assert c.name == "src"
    assert c.vocab.decode(c.ids) == ("// a.h\n#define A 1\n\n// b.c\nint b;\n\n"
                                     "// lib/deep/z.c\nint z;\n\n# lib/m.py\nprint('m')\n\n"
                                     "% notes.tex\n\\section{x}\n\n")
    assert warnings == ["left out 1 binary and 1 not UTF-8 file(s) (for example image.png, "
                        "latin1.c)"]
    only_c = corpus.load(str(src), include=["*.c", "*.h"], exclude=["lib/deep/*"])
    assert only_c.vocab.decode(only_c.ids) == "// a.h\n#define A 1\n\n// b.c\nint b;\n\n"
    again = corpus.load(str(src), warn=warnings.append)  # cached, keyed by the contents
    assert again.path == c.path and len(warnings) == 1
    (src / "b.c").write_text("int bb;\n")
    assert corpus.load(str(src)).path != c.path


def test_c_headers_builds_offline_or_says_why_not(tmp_path, monkeypatch):
    from charrnn.data import recipes

    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "data"))
    headers = tmp_path / "include"
    (headers / "sys").mkdir(parents=True)
    (headers / "stdio.h").write_text("int printf(const char *, ...);\n")
    (headers / "sys" / "types.h").write_text("typedef long off_t;\n")
    monkeypatch.setattr(recipes, "C_HEADERS", headers)
    c = corpus.load("c-headers")
    assert c.vocab.decode(c.ids) == ("// stdio.h\nint printf(const char *, ...);\n\n"
                                     "// sys/types.h\ntypedef long off_t;\n\n")
    monkeypatch.setattr(recipes, "C_HEADERS", tmp_path / "nowhere")
    recipes.path_of(recipes.load()["c-headers"]).unlink()
    with pytest.raises(CharrnnError, match="no system C headers in .*apt install libc6-dev"):
        corpus.load("c-headers")


def test_undecodable_bytes_can_be_replaced_or_read_in_another_encoding(write):
    path = write("latin.txt", "café crème\n".encode("latin-1"))
    assert "\ufffd" in corpus.load(str(path), errors="replace").vocab.chars
    latin = corpus.load(str(path), encoding="latin-1")
    assert latin.vocab.decode(latin.ids) == "café crème\n"


def test_python_stdlib_is_built_offline_and_deterministically(monkeypatch, tmp_path):
    name, path = corpus.resolve("python-stdlib")
    assert name == "python-stdlib" and path.stat().st_size > 1_000_000
    text = path.read_text(encoding="utf-8")
    files = re.findall(r"^# (\S+\.py)$", text, flags=re.M)
    assert "os.py" in files and "json/decoder.py" in files
    assert not [f for f in files if {"test", "tests"} & set(f.split("/")[:-1])]
    other = tmp_path / "again.txt"
    recipes.python_stdlib(other)
    assert other.read_bytes() == path.read_bytes()


def test_an_existing_file_wins_over_a_corpus_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "python-stdlib").write_text("my own text\n")
    name, path = corpus.resolve("python-stdlib")
    assert path.read_text() == "my own text\n"


def test_cache_metadata_is_json(write, cache_dir):
    corpus.load(str(write("a.txt", "abc\n")))
    meta = next((cache_dir / "encoded").glob("*.json"))
    assert json.loads(meta.read_text())["vocab"] == ["\n", "a", "b", "c"]


def damage(entry: Path, how: str) -> None:
    ids = next(entry.glob("*.npy"))
    meta = next(entry.glob("*.json"))
    data = ids.read_bytes()
    if how == "truncated":
        ids.write_bytes(data[:-7])
    elif how == "wrong ids":  # the same length, other characters: only the checksum can tell
        ids.write_bytes(data[:-3] + bytes([data[-1] ^ 1, data[-2], data[-3]]))
    elif how == "wrong length":
        record = json.loads(meta.read_text())
        meta.write_text(json.dumps({**record, "length": record["length"] + 5}))
    elif how == "not json":
        meta.write_text('{"vocab": ["a"')
    elif how == "ids missing":
        ids.unlink()


@pytest.mark.parametrize("how", ["truncated", "wrong ids", "wrong length", "not json",
                                 "ids missing"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_never_trusted(write, cache_dir, how):
    text = "the cat sat on the mat\n" * 200
    path = write("cat.txt", text)
    good = corpus.load(str(path))
    expected = np.array(good.ids)
    damage(cache_dir / "encoded", how)
    warnings = []
    again = corpus.load(str(path), warn=warnings.append)
    assert np.array_equal(np.array(again.ids), expected)
    assert again.vocab.decode(again.ids) == text
    assert len(warnings) == 1 and "was damaged; encoding it again" in warnings[0]
    assert corpus.load(str(path), warn=warnings.append) and len(warnings) == 1  # whole again


def test_a_corpus_that_changes_while_it_is_read_leaves_no_cache_entry(write, cache_dir,
                                                                       monkeypatch):
    path = write("moving.txt", "abc\n" * 1000)
    real = corpus.count_characters

    def count_then_change(*args, **kwargs):
        counts = real(*args, **kwargs)
        path.write_text("xyz\n" * 1000)  # another program writes between the two passes
        return counts

    monkeypatch.setattr(corpus, "count_characters", count_then_change)
    with pytest.raises(CharrnnError, match="changed while it was being read"):
        corpus.load(str(path))
    assert not list((cache_dir / "encoded").glob("*"))


def test_a_pipe_or_device_is_refused_as_a_corpus(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(CharrnnError, match="is not a regular file"):
            corpus.load(str(path))


def test_a_cache_folder_that_cannot_be_written_is_one_clear_error(write, monkeypatch):
    blocker = write("not-a-folder", "x")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CharrnnError, match="not a directory: the cache of encoded corpora; set "
                                           "CHARRNN_CACHE_DIR"):
        corpus.load(str(write("a.txt", "abc\n" * 10)))


def test_python_stdlib_is_built_once_in_one_place_that_corpus_list_knows(tmp_path):
    from conftest import invoke

    from charrnn.data import recipes

    _, built = corpus.resolve("python-stdlib")  # as `charrnn train python-stdlib` builds it
    assert built == recipes.path_of(recipes.load()["python-stdlib"])
    listed = invoke("corpus", "list").stdout
    line = next(x for x in listed.splitlines() if x.startswith("python-stdlib"))
    assert f"here: {built}" in line
