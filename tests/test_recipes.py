"""Named corpora from the network, tested against a local HTTP server on 127.0.0.1 (no test
touches the internet): verified downloads, every way a download fails, archives built byte for
byte, --from, and trust on first use for recipes with no pinned checksum."""

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import invoke

from charrnn.data import corpus, recipes
from charrnn.errors import CharrnnError

TEXT = b"Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):
        if self.path == "/cut":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(TEXT) * 10))
            self.end_headers()
            self.wfile.write(TEXT)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def recipe(server: str, path: str, **fields) -> recipes.Recipe:
    return recipes.Recipe(name="sonnets", about="test", source="test", licence="test",
                          build=fields.pop("build", "file"), url=server + path, **fields)


def left_behind(data_dir: Path) -> list[str]:
    """The files in the data folder, but its lock's (which holds nothing)."""
    return sorted(p.name for p in data_dir.rglob("*") if p.is_file() and
                  p.name != recipes.LOCK) if data_dir.exists() else []


def test_a_good_download_is_verified_kept_and_reused(server, data_dir):
    Handler.files["/sonnets.txt"] = TEXT
    r = recipe(server, "/sonnets.txt", sha256=sha(TEXT), size=len(TEXT))
    seen = []
    path = recipes.get(r, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == TEXT and seen[-1] == (len(TEXT), len(TEXT))
    del Handler.files["/sonnets.txt"]  # a second get needs no network
    assert recipes.get(r) == path
    assert left_behind(data_dir) == ["sonnets.txt"]


@pytest.mark.parametrize("path, message", [
    ("/sonnets.txt", "does not match its pinned checksum"),
    ("/missing.txt", "HTTP 404"),
    ("/cut", "was cut short"),
])
def test_a_failed_download_is_one_line_and_leaves_nothing(server, data_dir, path, message):
    Handler.files["/sonnets.txt"] = TEXT
    r = recipe(server, path, sha256=sha(b"something else"))
    with pytest.raises(CharrnnError, match=message) as e:
        recipes.get(r)
    assert "\n" not in str(e.value) and "nothing was kept" in str(e.value)
    assert left_behind(data_dir) == []


def test_no_network_names_the_url_and_how_to_place_the_file_by_hand(data_dir):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = recipe(f"http://127.0.0.1:{port}", "/sonnets.txt", sha256=sha(TEXT))
    with pytest.raises(CharrnnError) as e:
        recipes.get(r)
    said = str(e.value)
    assert f"cannot download http://127.0.0.1:{port}/sonnets.txt" in said
    assert "refused" in said.lower() and "charrnn corpus get NAME --from FILE" in said
    assert left_behind(data_dir) == []


def test_from_a_file_placed_by_hand_is_verified_the_same_way(tmp_path, data_dir):
    r = recipe("http://127.0.0.1:9", "/sonnets.txt", sha256=sha(TEXT))
    wrong = tmp_path / "wrong.txt"
    wrong.write_bytes(TEXT + b"tampered")
    with pytest.raises(CharrnnError, match="does not match its pinned checksum"):
        recipes.get(r, source=wrong)
    assert left_behind(data_dir) == []
    right = tmp_path / "right.txt"
    right.write_bytes(TEXT)
    assert recipes.get(r, source=right).read_bytes() == TEXT


def test_a_zip_recipe_is_its_member_byte_for_byte(server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("text8", TEXT * 100)
        z.writestr("README", "not the corpus")
    Handler.files["/text8.zip"] = buffer.getvalue()
    r = recipe(server, "/text8.zip", build="zip", member="text8", sha256=sha(TEXT * 100))
    assert recipes.get(r).read_bytes() == TEXT * 100


def tree(files: dict[str, bytes]) -> bytes:
    """What the `tree` build makes of these files (the expected corpus, written by hand)."""
    out = b""
    for path in sorted(files):
        comment = {".tex": b"% ", ".c": b"// ", ".h": b"// "}[Path(path).suffix]
        out += comment + path.encode() + b"\n" + files[path].rstrip() + b"\n\n"
    return out


FILES = {"algebra.tex": b"\\section{Rings}\n", "schemes.tex": b"\\section{Schemes}\n",
         "sub/topology.tex": b"\\section{Spaces}\n"}


@pytest.mark.parametrize("kind", ["zip", "tar.xz"])
def test_a_multi_file_recipe_is_built_byte_for_byte_from_an_archive(server, kind):
    members = {f"stacks-project-abc/{p}": d for p, d in FILES.items()}
    members["stacks-project-abc/Makefile"] = b"all:\n"  # not *.tex: left out
    members["stacks-project-abc/figure.tex"] = b"\x00binary"  # binary: left out
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as z:
            for name in reversed(sorted(members)):  # archive order is not corpus order
                z.writestr(name, members[name])
    else:
        with tarfile.open(fileobj=buffer, mode="w:xz") as t:
            for name in reversed(sorted(members)):
                info = tarfile.TarInfo(name)
                info.size = len(members[name])
                t.addfile(info, io.BytesIO(members[name]))
    Handler.files[f"/stacks.{kind}"] = buffer.getvalue()
    expected = tree(FILES)
    r = recipe(server, f"/stacks.{kind}", build="tree", include=("*.tex",),
               sha256=sha(expected))
    warnings = []
    assert recipes.get(r, warn=warnings.append).read_bytes() == expected
    assert warnings == ["left out 1 binary file(s) (for example figure.tex)"]


def test_a_recipe_with_no_pinned_checksum_records_its_first_download(server, data_dir):
    Handler.files["/unpinned.txt"] = TEXT
    r = recipe(server, "/unpinned.txt")
    warnings = []
    recipes.get(r, warn=warnings.append)
    assert warnings == [] and sha(TEXT) in (data_dir / "checksums.json").read_text()
    Handler.files["/unpinned.txt"] = TEXT + b"changed upstream\n"
    recipes.path_of(r).unlink()
    recipes.get(r, warn=warnings.append)
    assert len(warnings) == 1 and "differs from its first download" in warnings[0]


def test_the_shipped_recipes_are_complete_and_pinned_where_a_copy_was_checked():
    known = recipes.load()
    assert {"tinyshakespeare", "shakespeare", "war-and-peace", "linux", "latex", "enwik8",
            "text8", "python-stdlib", "c-headers"} <= set(known)
    for r in known.values():
        assert r.about and r.source and r.licence and r.build
        assert r.offline or r.url.startswith("https://")
    assert known["tinyshakespeare"].size == 1115394 and known["latex"].sha256


def test_tinyshakespeares_pinned_checksum_is_the_shared_copys():
    from conftest import TINYSHAKESPEARE

    if not TINYSHAKESPEARE.exists():
        pytest.skip("../shared/corpora/tinyshakespeare.txt is absent")
    r = recipes.load()["tinyshakespeare"]
    assert recipes.sha256_of(TINYSHAKESPEARE) == r.sha256
    assert recipes.get(r, source=TINYSHAKESPEARE).read_bytes() == TINYSHAKESPEARE.read_bytes()


def test_train_and_corpus_get_on_a_name_fetch_it_first_and_say_so(server, tmp_path,
                                                                   monkeypatch):
    Handler.files["/sonnets.txt"] = TEXT * 30
    r = recipe(server, "/sonnets.txt", sha256=sha(TEXT * 30), size=len(TEXT) * 30)
    monkeypatch.setattr(recipes, "load", lambda text=None: {"sonnets": r})
    monkeypatch.chdir(tmp_path)
    listed = invoke("corpus", "list")
    assert "sonnets" in listed.stdout and "not here yet" in listed.stdout
    trained = invoke("train", "sonnets", "--max-steps", 2, "--hidden-size", 16)
    assert trained.exit_code == 0, trained.output
    assert f"sonnets is not on this machine yet: downloading it from {r.url}" in trained.stderr
    got = invoke("corpus", "get", "sonnets")
    assert got.exit_code == 0 and "checked against its pinned sha256" in got.stderr
    assert "here: " in invoke("corpus", "list").stdout
    unknown = invoke("corpus", "get", "nope", catch_exceptions=True)
    assert unknown.exit_code == 1 and "unknown corpus 'nope'" in unknown.stderr


def test_resolving_a_file_or_folder_never_reaches_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "fetch", lambda *a, **k: pytest.fail("fetched"))
    (tmp_path / "latex").write_text("my own latex\n")
    monkeypatch.chdir(tmp_path)
    assert corpus.resolve("latex")[1] == Path("latex")  # an existing file wins over a name


def test_a_full_disk_while_getting_a_corpus_leaves_nothing(server, data_dir, monkeypatch):
    import errno

    Handler.files["/sonnets.txt"] = TEXT
    r = recipe(server, "/sonnets.txt", sha256=sha(TEXT))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recipes, "build", full)
    with pytest.raises(CharrnnError, match="no space left on the device holding .*sonnets.txt "
                                           "while getting sonnets; nothing was kept"):
        recipes.get(r)
    assert left_behind(data_dir) == []


def test_progress_is_plain_lines_off_a_terminal():
    from rich.console import Console

    out = io.StringIO()
    progress = recipes.Progress("latex", Console(file=out, force_terminal=False))
    for done in range(0, 30_000_001, 1_000_000):
        progress(done, 30_000_000)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "downloading latex: 30.0 MB of 30.0 MB"
    assert 10 <= len(lines) <= 12  # one every 10%, not one a block
