"""Every command with every kind of bad input: a non-zero exit, one clear line on stderr, no
traceback, and no file of the user's changed. docs/troubleshooting.md lists the same cases,
each with its whole line; a test keeps the two in step."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import invoke, train_run

TROUBLESHOOTING = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


def documented() -> dict[str, str]:
    """The troubleshooting table: command line -> the line it gets (after "charrnn: error: ")."""
    import re

    rows = {}
    for line in TROUBLESHOOTING.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\| .*? \| `charrnn (.*?)` \| (.*) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).replace("\\|", "|")
    return rows
TEXT = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 40

# (what the user did, the command line, what the one line on stderr says)
CASES = [
    ("corpus file does not exist", "train missing.txt", "does not exist"),
    ("corpus file is empty", "train empty.txt", "is empty"),
    ("corpus is a binary file", "train binary.bin", "looks binary"),
    ("corpus is not UTF-8", "train latin1.txt", "is not valid utf-8 at byte"),
    ("corpus is an empty folder", "train folder", "holds no files"),
    ("corpus has one character", "train one.txt", "has 1 character; charrnn needs at least 2"),
    ("no corpus given", "train", "give a CORPUS"),
    ("unknown --model", "train york.txt --model transformer", "unknown --model"),
    ("--layers 0", "train york.txt --layers 0", "layers must be a whole number"),
    ("--hidden-size too large", "train york.txt --hidden-size 100000000",
     "hidden-size must be a whole number"),
    ("--dropout 1.5", "train york.txt --dropout 1.5", "--dropout must be in [0, 1)"),
    ("--lr 0", "train york.txt --lr 0", "--lr must be a positive number"),
    ("--batch-size 0", "train york.txt --batch-size 0", "--batch-size must be 1 or more"),
    ("--seq-len 0", "train york.txt --seq-len 0", "--seq-len must be 1 or more"),
    ("--epochs 0", "train york.txt --epochs 0", "--epochs must be a number more than 0"),
    ("--grad-clip -1", "train york.txt --grad-clip -1", "--grad-clip must be 0 (off) or more"),
    ("--time that is not a duration", "train york.txt --time soon", "is not a duration"),
    ("--time 0", "train york.txt --time 0s", "--time must be more than 0"),
    ("--val-frac 1.5", "train york.txt --val-frac 1.5", "--val-frac must be in [0, 1)"),
    ("unknown --device", "train york.txt --device tpu", "--device must be auto, cpu, cuda"),
    ("unknown --encoding", "train york.txt --encoding klingon", "unknown encoding: klingon"),
    ("unknown --errors", "train york.txt --errors shrug", "unknown error handler name"),
    ("a number option given a word", "train york.txt --layers many",
     "Invalid value for '--layers'"),
    ("--out holds a finished run", "train york.txt --out run", "already holds a run"),
    ("--resume of a missing run", "train --resume nowhere", "does not exist"),
    ("--resume with --init-from", "train --resume run --init-from run",
     "do not go together"),
    ("--init-from a folder that is not a run", "train york.txt --init-from folder",
     "has no config.json"),
    ("--temperature below 0", "sample run --temp -1", "--temperature must be 0 or more"),
    ("--top-p 0", "sample run --top-p 0", "--top-p must be in (0, 1]"),
    ("--top-p above 1", "sample run --top-p 1.5", "--top-p must be in (0, 1]"),
    ("--top-k 0", "sample run --top-k 0", "--top-k must be 1 or more"),
    ("--length below 0", "sample run --length -5", "--length must be 0 or more"),
    ("--num-samples 0", "sample run --num-samples 0", "--num-samples must be 1 or more"),
    ("a prime with unseen characters", "sample run --prime Zebra§", "never saw"),
    ("--prime and --prime-file", "sample run --prime a --prime-file york.txt", "not both"),
    ("--prime-file missing", "sample run --prime-file nothing.txt", "cannot read --prime-file"),
    ("an unknown option", "sample run --bogus", "No such option"),
    ("run does not exist", "sample nowhere", "does not exist"),
    ("run is a file", "sample york.txt", "is a file, not a run directory"),
    ("run folder without a checkpoint", "sample folder", "has no config.json"),
    ("config.json is not JSON", "sample broken-config", "config.json is corrupted"),
    ("model.safetensors truncated", "sample truncated-weights", "is corrupted or truncated"),
    ("weights do not match the config", "sample mismatched", "does not match the model"),
    ("checkpoint format from another version", "sample future", "format version 99"),
    ("latest.pt damaged", "train --resume broken-state", "it cannot be resumed"),
    ("--layer that does not exist", "inspect-cells run --layer 9", "--layer 9 does not exist"),
    ("--cells that do not exist", "inspect-cells run --cells 999", "--cells 999 does not exist"),
    ("--cells that are not numbers", "inspect-cells run --cells a,b",
     "is not a list of cell numbers"),
    ("unknown --state", "inspect-cells run --state reset", "unknown --state"),
    ("unknown --probe", "inspect-cells run --probe sarcasm", "unknown --probe"),
    ("bad --probe-regex", "inspect-cells run --probe-regex ([", "not a valid regular expression"),
    ("unknown --color", "inspect-cells run --color sometimes", "--color must be auto"),
    ("--text missing", "inspect-cells run --text nothing.txt",
     "cannot read --text nothing.txt"),
    ("--offset past the text", "inspect-cells run --offset 99999999", "past the end"),
    ("--top 0", "inspect-cells run --top 0", "--top must be 1 or more"),
    ("--text and --prime", "inspect-cells run --text york.txt --prime a", "not both"),
    # where the user's files could be lost
    ("--html is an existing file", "inspect-cells run --html york.txt",
     "already exists; pass --force"),
    ("--html is a symbolic link", "inspect-cells run --html link.html", "is a symbolic link"),
    ("--html is a device", "inspect-cells run --html /dev/null", "is not a regular file"),
    ("--html is a folder", "inspect-cells run --html folder", "is a folder"),
    ("--html under a file", "inspect-cells run --html york.txt/page.html",
     "a part of the path is a file"),
    ("--out is a folder of other files", "train york.txt --out mine",
     "is a folder of other files, not a charrnn run"),
    ("--out is a file", "train york.txt --out york.txt", "is a file; give a folder"),
    ("--out inside a file", "train york.txt --out york.txt/run", "which is a file"),
    # settings a run cannot take
    ("--resume with a size flag", "train --resume run --hidden-size 64",
     "--threads or --tensorboard can change, not --hidden-size"),
    ("--resume with --lr and --overwrite", "train --resume run --lr 0.1 --overwrite",
     "not --lr, --overwrite"),
    ("--init-from with a size flag", "train york.txt --init-from run --hidden-size 8",
     "only --dropout may be given with it"),
    # numbers that make no sense
    ("--seed too large", "sample run --seed 99999999999999999999999",
     "--seed must be a whole number from 0 to"),
    ("--seed below 0", "train york.txt --seed -1", "--seed must be a whole number from 0 to"),
    ("--lr nan", "train york.txt --lr nan", "--lr must be a positive number"),
    ("--weight-decay inf", "train york.txt --weight-decay inf", "--weight-decay must be a number"),
    ("--epochs inf", "train york.txt --epochs inf", "--epochs must be a number more than 0"),
    ("--dropout nan", "train york.txt --dropout nan", "--dropout must be in [0, 1)"),
    ("--temperature nan", "sample run --temp nan", "--temperature must be 0 or more"),
    ("--top-p nan", "sample run --top-p nan", "--top-p must be in (0, 1]"),
    ("--max-memory not a size", "inspect-cells run --max-memory lots", "is not a size"),
    # inputs without bound, and special files
    ("corpus is a device", "train /dev/zero", "is not a regular file"),
    ("--prime-file too long", "sample run --prime-file long.txt", "the most a prime may have"),
    ("--prime-file not UTF-8", "sample run --prime-file latin1.txt", "is not UTF-8 text"),
    ("--prime-file is a folder", "sample run --prime-file folder", "cannot read --prime-file"),
    ("--text is a device", "inspect-cells run --text /dev/zero", "never saw"),
    ("--offset past the --text", "inspect-cells run --text york.txt --offset 99999",
     "past the end of --text"),
    ("a text too long for --max-memory", "inspect-cells run --text york.txt --length 9999 "
     "--max-memory 1M", "more than --max-memory"),
    # values whose every form is accepted or refused
    ("--encoding that is not a text encoding", "train york.txt --encoding rot13",
     "is not a text encoding"),
    ("--device cuda:abc", "train york.txt --device cuda:abc", "--device must be auto"),
    ("--threads 0", "train york.txt --threads 0", "--threads must be a whole number"),
    ("features --features -3", "features run --features -3",
     "--features must be a whole number from 1 to"),
    ("features --layer 0", "features run --layer 0", "--layer 0 does not exist"),
    ("explore off a terminal", "explore run", "needs a terminal"),
    ("--plan-from with a size flag", "train --plan-from run --hidden-size 8",
     "only --device, --threads or --tensorboard can change"),
    ("--out holds another program's config.json", "train york.txt --out theirs --overwrite",
     "is not a charrnn run's"),
    # named corpora and folders
    ("an unknown corpus name for get", "corpus get nope", "unknown corpus 'nope'"),
    ("--from a file that is not there", "corpus get tinyshakespeare --from nothing.txt",
     "--from nothing.txt is not a file"),
    ("--from the wrong file", "corpus get tinyshakespeare --from york.txt",
     "does not match its pinned checksum"),
    ("--include that matches nothing", "train src --include *.zzz",
     "holds no files matching --include / --exclude"),
    ("--test-frac too large", "train york.txt --val-frac 0.5 --test-frac 0.5",
     "--val-frac plus --test-frac below 1"),
    # a stranger's run
    ("the run's corpus is another file", "inspect-cells swapped-corpus",
     "is not the text it was trained on"),
    ("latest.pt with keys no state has", "train --resume odd-state",
     "holds keys a charrnn training state never has"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("user"))


def make_workspace(ws: Path) -> Path:
    """A folder of the user's: corpora, a trained run, and damaged copies of it."""
    (ws / "york.txt").write_text(TEXT)
    (ws / "empty.txt").write_bytes(b"")
    (ws / "binary.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" * 10)
    (ws / "latin1.txt").write_bytes("Café au lait, crème brûlée.\n".encode("latin-1"))
    (ws / "one.txt").write_text("x")
    (ws / "folder").mkdir()
    (ws / "src").mkdir()
    (ws / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (ws / "mine").mkdir()  # a folder of the user's that holds a file with a run's name
    (ws / "mine" / "model.safetensors").write_bytes(b"my own weights")
    (ws / "theirs").mkdir()  # another program's folder, with a config.json of its own
    (ws / "theirs" / "config.json").write_text('{"name": "my app"}')
    (ws / "theirs" / "samples.txt").write_text("my samples")
    (ws / "link.html").symlink_to(ws / "york.txt")
    (ws / "long.txt").write_text("ab\n" * 1_400_000)  # 4.2 million characters
    train_run(ws / "york.txt", ws / "run", max_steps=4, eval_every=2,
              model={"hidden_size": 16, "embedding_size": 8})
    for name in ("broken-config", "truncated-weights", "mismatched", "future", "broken-state",
                 "swapped-corpus", "odd-state"):
        shutil.copytree(ws / "run", ws / name)
    # a stranger's config that points at a file of this user's
    (ws / "private.txt").write_text("Now is the winter of my password\n")
    config = json.loads((ws / "swapped-corpus" / "config.json").read_text())
    config["corpus"]["path"] = str(ws / "private.txt")
    (ws / "swapped-corpus" / "config.json").write_text(json.dumps(config))
    state = torch.load(ws / "odd-state" / "latest.pt", weights_only=True)
    torch.save({**state, "payload": torch.zeros(3)}, ws / "odd-state" / "latest.pt")
    (ws / "broken-config" / "config.json").write_text('{"format_version": 1, "mod')
    weights = ws / "truncated-weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    for name, change in (("mismatched", lambda c: c["model"].update(hidden_size=32)),
                         ("future", lambda c: c.update(format_version=99))):
        config = json.loads((ws / name / "config.json").read_text())
        change(config)
        (ws / name / "config.json").write_text(json.dumps(config))
    state = ws / "broken-state" / "latest.pt"
    state.write_bytes(state.read_bytes()[:100])
    return ws


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("what, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_line_and_changes_nothing(workspace, monkeypatch, what,
                                                           command, message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    result = invoke(*command.split(), catch_exceptions=True)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charrnn: error: ") and message in lines[0], lines[0]
    said = lines[0].removeprefix("charrnn: error: ").replace(str(workspace) + "/", "")
    assert documented().get(command) == said, f"docs/troubleshooting.md says otherwise: {said}"
    after = snapshot(workspace)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"{what} changed {changed}"
    assert not set(after) - set(before), f"{what} left {set(after) - set(before)}"


def test_the_troubleshooting_page_lists_every_case():
    rows = documented()
    assert [c for _, c, _ in CASES if c not in rows] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    result = invoke("train", "york.txt", "--device", "cuda", "--out", "gpu-run",
                    catch_exceptions=True)
    assert result.exit_code == 1 and "sees no CUDA GPU" in result.stderr
