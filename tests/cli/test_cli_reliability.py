"""Bad numbers and paths on the command line (issue 18): every case exits with code 2 and one
line on stderr, raises no traceback, and touches nothing outside the output folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from distilkit.cli.main import main

# (command line, a fragment the one-line error must hold); OUT, DIR, WORK are replaced
CASES = [
    (["distill", "--time-budget", "inf"], "--time-budget: expected a finite number"),
    (["distill", "--time-budget", "nan"], "--time-budget: expected a finite number"),
    (["distill", "--time-budget", "1e999"], "--time-budget: expected a finite number"),
    (["distill", "--time-budget", "-5"], "time_budget (--time-budget) must be a finite"),
    (["distill", "--time-budget", "ten"], "expected a number, got 'ten'"),
    (["distill", "--job-time-budget", "nan"], "--job-time-budget: expected a finite number"),
    (["distill", "--job-time-budget", "0"], "job_time_budget (--job-time-budget) must be"),
    (["distill", "--lr", "inf"], "--lr: expected a finite number"),
    (["distill", "--lr=-1e-4"], "learning_rate must be a finite number > 0"),
    (["distill", "--max-steps", "0"], "max_steps must be >= 1"),
    (["distill", "--max-steps", "1.5"], "--max-steps: invalid int value"),
    (["distill", "--batch-size", "0"], "batch_size and grad_accumulation must be >= 1"),
    (["distill", "--seed", "-1"], "seed (--seed) must be from 0"),
    (["distill", "--seed", "99999999999"], "seed (--seed) must be from 0"),
    (["distill", "--weights", "cos=nan"], "--weights takes name=value pairs"),
    (["distill", "--max-len", "100000"], "--max-len 100000 is more than the teacher's 512"),
    (["distill", "--config", "DIR"], "is a folder: a config is a JSON file"),
    (["distill", "--config", "WORK/missing.json"], "config file not found"),
    (["distill", "--corpus", "WORK/no-such-corpus.txt", "--max-steps", "1"], "not found"),
    (["distill", "--teacher", "./no-such-teacher"], "no-such-teacher does not exist"),
    (["distill", "--teacher", "no-such-teacher"], "there is no folder"),
    (["distill", "--out", "WORK/a-file.txt"], "a-file.txt"),
    (["embed", "all-MiniLM-L6-v2", "--input", "DIR", "--output", "OUT/x.npy"], "is a folder"),
    (["embed", "all-MiniLM-L6-v2", "--input", "WORK/none.txt", "--output", "OUT/x.npy"], "not"),
    (["search", "all-MiniLM-L6-v2", "--input", "DIR", "--query", "q"], "is a folder"),
    (
        [
            "search",
            "all-MiniLM-L6-v2",
            "--input",
            "WORK/texts.txt",
            "--query",
            "q",
            "--index",
            "WORK/broken.npz",
        ],
        "broken.npz is not a distilkit search index, or is damaged",
    ),
    (["init-student", "WORK/teacher", "--out", "WORK/teacher"], "is the model being read from"),
    (["info", "WORK/nothing-here"], "nothing-here"),
]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` but ``skip``: (size, mtime_ns, mode)."""
    state = {}
    for path in root.rglob("*"):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        state[str(path)] = (info.st_size if path.is_file() else 0, info.st_mtime_ns, info.st_mode)
    return state


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with the inputs the cases name (a teacher copy, texts, a broken index)."""
    from distilkit.encoder import load

    root = tmp_path_factory.mktemp("work")
    (root / "texts.txt").write_text("one text\nanother text\n")
    (root / "a-file.txt").write_text("mine\n")
    (root / "folder").mkdir()
    load("all-MiniLM-L6-v2").save(root / "teacher")
    (root / "teacher" / "notes.md").write_text("mine\n")
    index = root / "broken.npz"
    np.savez(index, vectors=np.zeros((2, 4)))
    index.write_bytes(index.read_bytes()[:50])  # truncated
    return root


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(argv, says, work, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    replace = {"OUT": str(out), "DIR": str(work / "folder"), "WORK": str(work)}
    argv = [replace.get(a, a.replace("WORK/", f"{work}/").replace("OUT/", f"{out}/")) for a in argv]
    if argv[0] in ("distill",) and "--out" not in argv:
        argv += ["--out", str(out)]
    monkeypatch.chdir(work)
    before = snapshot(work, skip=out)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert says in lines[0], lines[0]
    assert snapshot(work, skip=out) == before
    assert not out.exists() or not any(out.rglob("*.safetensors"))


def test_a_broken_index_beside_good_texts_is_never_replaced(work, capsys):
    """The user's --index file is not overwritten when it cannot be read."""
    before = (work / "broken.npz").read_bytes()
    argv = ["search", "all-MiniLM-L6-v2", "--input", str(work / "texts.txt"), "--query", "q"]
    assert main([*argv, "--index", str(work / "broken.npz")]) == 2
    assert (work / "broken.npz").read_bytes() == before
    capsys.readouterr()


def test_umask_022_files_of_a_search_index_are_readable(work, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        argv = ["search", "all-MiniLM-L6-v2", "--input", str(work / "texts.txt"), "--query", "q"]
        assert main([*argv, "--index", str(tmp_path / "index.npz")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "index.npz").stat().st_mode & 0o777 == 0o644
    capsys.readouterr()
