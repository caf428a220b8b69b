"""What a stranger's run, an archive from anywhere or a large input can reach: nothing outside
what the user named is read, built, fetched, written or deleted, and memory stays bounded."""

import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import edit_config, four_step_run, invoke

from charrnn import checkpoint, rundir
from charrnn.data import recipes
from charrnn.errors import CharrnnError

TEXT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n" * 40


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def run(tmp_path):
    return four_step_run(tmp_path, TEXT, "sonnet.txt")


def peak_kb(code: str, env=None) -> int:
    """The peak resident memory (kB) of `code` run in a fresh Python, over what it held once
    its imports were done (the last line it prints is that baseline, in kB)."""
    program = ("import re\n"
               "def rss(field):\n"
               "    return int(re.search(field + r':\\s*(\\d+)', open('/proc/self/status')"
               ".read())[1])\n" + code + "\nprint(rss('VmHWM') - BASE)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **(env or {})})
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux's /proc to read peak memory")


# ---------------------------------------------------------------------------------------------
# A stranger's config names what to read


def test_a_config_naming_a_private_folder_builds_nothing_from_it(run, tmp_path, cache_dir):
    private = tmp_path / "private"
    private.mkdir()
    (private / "diary.txt").write_text("my secrets\n" * 100)
    edit_config(run, lambda c: c["corpus"].update(source=str(private), path="/nowhere.txt"))
    folders = cache_dir / "folders"
    before = sorted(folders.iterdir()) if folders.exists() else []
    result = invoke("train", "--resume", run, "--max-steps", "6")
    assert result.exit_code == 1
    assert f"trained on {private}, whose text is not here as it was" in result.stderr
    assert f"charrnn train {private} --resume {run}" in result.stderr
    assert (sorted(folders.iterdir()) if folders.exists() else []) == before  # nothing built


def test_a_config_naming_a_corpus_fetches_and_builds_nothing(run, data_dir, monkeypatch):
    def never(*a, **k):
        raise AssertionError("a corpus was fetched or built on a config's word")

    monkeypatch.setattr(recipes, "get", never)
    for name in ("c-headers", "enwik8"):
        edit_config(run, lambda c, name=name: c["corpus"].update(source=name,
                                                                  path="/nowhere.txt"))
        result = invoke("train", "--resume", run, "--max-steps", "6")
        assert result.exit_code == 1 and f"trained on {name}" in result.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_cache_copy_of_a_users_folder_is_readable_by_that_user_alone(tmp_path, cache_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n" * 300)
    result = invoke("train", src, "--out", tmp_path / "r", "--max-steps", "2",
                    "--hidden-size", "16")
    assert result.exit_code == 0, result.output
    made = [p for p in cache_dir.rglob("*") if p.is_file() and p.parent.name in
            ("folders", "encoded")]
    assert made and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made), \
        [(p.name, oct(p.stat().st_mode)) for p in made]


# ---------------------------------------------------------------------------------------------
# Only a run is a run


def test_overwrite_never_deletes_a_folder_whose_config_is_another_programs(tmp_path):
    corpus = tmp_path / "sonnet.txt"
    corpus.write_text(TEXT)
    theirs = tmp_path / "project"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"name": "my app", "debug": true}')
    (theirs / "samples.txt").write_text("my samples")
    for extra in ([], ["--overwrite"]):
        result = invoke("train", corpus, "--out", theirs, "--max-steps", "2", *extra)
        assert result.exit_code == 1 and "not a charrnn run's" in result.stderr
    assert (theirs / "config.json").read_text() == '{"name": "my app", "debug": true}'
    assert (theirs / "samples.txt").read_text() == "my samples"


def test_overwrite_removes_all_the_old_run_made_and_nothing_it_links_to(run, tmp_path):
    (run / "eval-cache.json").write_text("{}")
    (run / "features-l1-h.safetensors").write_bytes(b"x")
    (run / "features-l1-h.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (run / "tensorboard").symlink_to(outside, target_is_directory=True)
    result = invoke("train", tmp_path / "sonnet.txt", "--out", run, "--overwrite",
                    "--max-steps", "2", "--hidden-size", "16")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in run.iterdir())
    assert not {"eval-cache.json", "features-l1-h.safetensors", "features-l1-h.json",
                "tensorboard"} & set(names), names
    assert (outside / "keep.txt").read_text() == "mine"  # the link went, not what it named


def test_a_removal_that_fails_leaves_the_old_run_whole(run, monkeypatch):
    before = sorted(p.name for p in run.iterdir())
    real, calls = os.rename, []

    def failing(a, b):
        calls.append(a)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied", str(a))
        return real(a, b)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(CharrnnError, match="it is left as it was"):
        rundir.clear_run(run)
    monkeypatch.setattr(os, "rename", real)
    assert sorted(p.name for p in run.iterdir()) == before
    checkpoint.load(run)  # whole


# ---------------------------------------------------------------------------------------------
# Archives and downloads are bounded


def recipe(path: Path, build: str, size: int = 0, **kw) -> recipes.Recipe:
    return recipes.Recipe(name=kw.pop("name", "enwik8"), about="a test", source="a test",
                          licence="none", build=build, url=path.as_uri(), size=size, **kw)


def test_a_zip_member_larger_than_its_recipe_is_refused_before_it_is_kept(tmp_path, data_dir):
    bomb = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("enwik8", b"\0" * (20 << 20))  # 20 MB that packs into a few KB
    assert bomb.stat().st_size < 100_000
    r = recipe(bomb, "zip", size=1 << 20, member="enwik8")
    with pytest.raises(CharrnnError, match="grew past"):
        recipes.get(r, source=bomb)
    assert not recipes.path_of(r).exists()
    assert not (data_dir / "checksums.json").exists()  # no first-seen checksum of it


def test_a_build_of_another_size_is_kept_but_its_checksum_not_recorded(tmp_path, data_dir):
    text = tmp_path / "war.txt"
    text.write_text("War and peace.\n" * 1000)
    r = recipe(text, "file", size=text.stat().st_size + 10, name="war-and-peace")
    said = []
    recipes.get(r, source=text, warn=said.append)
    assert recipes.path_of(r).exists()
    assert any("checksum is not recorded" in line for line in said), said
    assert "war-and-peace" not in recipes.read_json_object(data_dir / "checksums.json")


@needs_proc
def test_tar_members_are_streamed_not_held(tmp_path, data_dir):
    archive = tmp_path / "linux.tar"
    with tarfile.open(archive, "w") as t:
        for name in ("linux/a.c", "linux/b.c"):
            member = tmp_path / "member.c"
            member.write_bytes(b"int x;\n" * ((30 << 20) // 7))  # 30 MB of C each
            t.add(member, arcname=name)
    code = (f"from charrnn.data import recipes\nBASE = rss('VmRSS')\n"
            f"r = recipes.Recipe(name='linux', about='', source='', licence='', build='tree', "
            f"url='', include=('*.c',))\n"
            f"recipes.get(r, source=__import__('pathlib').Path({str(archive)!r}))")
    grown = peak_kb(code, env={"CHARRNN_DATA_DIR": str(data_dir)})
    assert grown < 40_000, f"{grown // 1024} MB for two 30 MB members"


def test_a_killed_get_leaves_nothing_once_the_next_corpus_command_runs(data_dir):
    folder = data_dir / "corpora"
    (folder / ".get-abc123").mkdir(parents=True)
    (folder / ".get-abc123" / "download").write_bytes(b"half")
    (folder / ".enwik8.txt.xyz.tmp").write_bytes(b"half")
    assert invoke("corpus", "list").exit_code == 0
    assert sorted(p.name for p in folder.iterdir() if p.name != recipes.LOCK) == []


def test_a_get_killed_by_a_signal_leaves_nothing_behind_after_the_next(tmp_path, data_dir):
    import signal
    import time

    big = tmp_path / "big.txt"
    big.write_bytes(b"abc\n" * (50 << 20))  # 200 MB: long enough to be caught mid-build
    code = ("import sys; from pathlib import Path; from charrnn.data import recipes\n"
            "r = recipes.Recipe(name='big', about='', source='', licence='', build='file', "
            "url='')\nrecipes.get(r, source=Path(sys.argv[1]))")
    env = {**os.environ, "CHARRNN_DATA_DIR": str(data_dir)}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-c", code, str(big)], env=env)
        folder = data_dir / "corpora"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (folder.is_dir() and any(
                p.name.startswith(".") and p.name != recipes.LOCK for p in folder.iterdir())):
            time.sleep(0.01)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert invoke("corpus", "list").exit_code == 0
        left = [p.name for p in folder.iterdir() if p.name != recipes.LOCK]
        assert left == [] or left == ["big.txt"], (sig, left)
        (folder / "big.txt").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Bounded memory


@pytest.mark.slow
@needs_proc
def test_a_text_read_past_a_far_offset_is_not_held(run):
    code = ("import sys\nfrom charrnn.interp import inspection\nBASE = rss('VmRSS')\n"
            "text = inspection.read_text('/dev/zero', '--text', 100, skip={offset})\n")
    near, far = (peak_kb(code.format(offset=n)) for n in (0, 200_000_000))
    assert far - near < 50_000, f"{(far - near) // 1024} MB more to skip 200M characters"


def test_a_prime_continuation_too_large_is_refused_before_it_is_generated(run):
    import time

    start = time.monotonic()
    result = invoke("inspect-cells", run, "--prime", "Shall", "--length", "100000000",
                    "--max-memory", "1M")
    assert result.exit_code == 1 and "--max-memory" in result.stderr
    assert time.monotonic() - start < 10


@needs_proc
def test_a_folder_of_one_large_file_is_built_in_bounded_memory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.py").write_bytes(b"print('hello, world')\n" * ((60 << 20) // 22))  # 60 MB
    code = (f"from pathlib import Path\nfrom charrnn.data.concat import concatenate, read_folder\n"
            f"BASE = rss('VmRSS')\n"
            f"with open({str(tmp_path / 'out.txt')!r}, 'wb') as out:\n"
            f"    concatenate(read_folder(Path({str(src)!r}), ['big.py']), out)")
    grown = peak_kb(code)
    assert grown < 30_000, f"{grown // 1024} MB to build a 60 MB folder"
    assert (tmp_path / "out.txt").read_bytes().startswith(b"# big.py\nprint('hello")
