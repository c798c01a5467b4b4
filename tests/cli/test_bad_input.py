"""Bad input to every command: one message that names the problem and the fix, exit 2, no
traceback, no password, and nothing created (no study, no results database). (A study that
exists without --resume: tests/trials/search/test_search.py; a broken LLaVA set: test_bad_data.py.)"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.bad_corpus import CORPUS, SECRET, Case
from tests.conftest import EXAMPLES
from tests.search_space.test_malformed import BASE
from vlmsearch.cli import main

DOWN_PG = f"postgresql+psycopg://bob:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1
BROKEN_YAML = "name: x\nexperts: {clip: {source: tiny-clip\n"

# (command line, what the message must say: the problem, then the fix)
CASES = {
    "check broken yaml": ("check broken.yaml", "YAML syntax error", "line 3"),
    "trial broken yaml": ("trial broken.yaml", "YAML syntax error", "line 3"),
    "run broken yaml": ("run broken.yaml", "YAML syntax error", "line 3"),
    "run no file": ("run nofile.yaml", "no such file", "check the path"),
    "run unknown fusion": ("run typo.yaml", "unknown fusion 'cross_atn'",
                           "did you mean 'cross_attention'"),
    "run missing model dir": ("run missing.yaml", "model directory './no-such-model' does not exist",
                              "fix the path"),
    "check truncated config": ("check truncated.yaml", "config.json is not readable JSON", "save_pretrained"),
    "check config is a list": ("check listed.yaml", "holds a JSON list, not an object", "HF config.json"),
    "check config lacks a key": ("check keyless.yaml",
                                 "lacks what its family needs (KeyError: 'hidden_sizes')", "save_pretrained"),
    "trial folder without a model": ("trial nomodel.yaml", "holds no config.json", "save_pretrained wrote"),
    "run file as model folder": ("run asfile.yaml", "is a file, not a model directory", "fix the path"),
    "trial missing model dir": ("trial missing_point.yaml", "does not exist", "fix the path"),
    "trial given a space": ("trial space.yaml", "this is a search space", "a point needs single values"),
    "run python tag": ("run pytag.yaml", "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not "
                       "allowed", "remove the tag"),
    "run unreachable storage": (f"run space.yaml --storage {DOWN_PG}", "connection failed",
                                "Is the server running"),
    "run unknown storage driver": ("run space.yaml --storage nonsense://x",
                                   "no database driver for 'nonsense'", "cannot open storage"),
    "run ray flag without ray": ("run space.yaml --backend optuna --ray-address auto",
                                 "--ray-address joins a Ray cluster", "add --backend ray"),
    "run no gpu": ("run space.yaml --device cuda", "sees no CUDA GPU", "use --device auto or cpu"),
    "run unknown device": ("run space.yaml --device tpu", "unknown device 'tpu'", "use --device auto"),
    "results unknown study": ("results --study nosuch", "unknown study 'nosuch'", "no studies in"),
    "results unreachable storage": (f"results --study x --storage {DOWN_PG}", "connection failed",
                                    "Is the server running"),
    "studies unreachable storage": (f"studies --storage {DOWN_PG}", "connection failed",
                                    "Is the server running"),
    "sync unknown study": ("sync --study nosuch", "unknown study 'nosuch'", "no studies in"),
    "db upgrade unreachable": (f"db upgrade --storage {DOWN_PG}", "connection failed",
                               "Is the server running"),
    "list unknown registry": ("list fusionz", "fusionz", "experts"),
    "run study outside the run folder": ("run space.yaml --study ../escape", "--study: name '../escape'",
                                         "e.g. --study quickstart"),
    "run absolute study": ("run space.yaml --study /tmp/abs", "only letters, digits", "e.g. --study"),
    "run study with a slash": ("run space.yaml --study a/b", "must start with a letter", "e.g. --study"),
    "run in-memory sqlite": ("run space.yaml --storage sqlite:///", "names no database file",
                             "give a file, e.g. sqlite:///"),
    "run sqlite memory": ("run space.yaml --storage sqlite:///:memory:", "keeps nothing", "give a file"),
    "run password with an at": (f"run space.yaml --storage postgresql+psycopg://bob:{SECRET}@x@127.0.0.1:1/db",
                                "holds an '@'", "as %40"),
    "studies password in the query": (f"studies --storage postgresql+psycopg://bob@127.0.0.1:1/db?password={SECRET}",
                                      "connection failed", "Is the server running"),
    "studies in-memory sqlite": ("studies --storage sqlite:///", "names no database file", "give a file"),
    "dashboard bad port": ("dashboard --port 0", "--port", "greater than or equal to 1"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("bad-input")
    # the copy's expert folders are the examples' own (relative ones are read beside the YAML)
    skills = f"source: {EXAMPLES}/experts/"
    quick = (EXAMPLES / "quickstart.yaml").read_text().replace("source: experts/", skills)
    (where / "broken.yaml").write_text(BROKEN_YAML)
    (where / "space.yaml").write_text(quick)
    (where / "typo.yaml").write_text(quick.replace("kind: sequence_concat", "kind: cross_atn", 1))
    (where / "missing.yaml").write_text(quick.replace(f"{skills}colour", "source: ./no-such-model"))
    point = (EXAMPLES / "comm_point.yaml").read_text()
    (where / "missing_point.yaml").write_text(point.replace("source: tiny-clip", "source: ./no-such-model"))
    for name, config in [("truncated", '{"model_type": "clip_vision'), ("listed", "[1, 2]"),
                         ("keyless", '{"model_type": "convnext"}'), ("nomodel", None)]:
        (where / name).mkdir()
        if config is not None:
            (where / name / "config.json").write_text(config)
        (where / f"{name}.yaml").write_text(point.replace("source: tiny-clip", f"source: ./{name}"))
    (where / "weights.bin").write_text("not a folder")
    (where / "asfile.yaml").write_text(quick.replace(f"{skills}colour", "source: ./weights.bin"))
    (where / "pytag.yaml").write_text(f"!!python/object/apply:os.system ['touch {where}/pwned']\n")
    return where


def vlmsearch(cwd: Path, line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *line.split()], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_message_exit_2_and_creates_nothing(folder: Path, tmp_path: Path,
                                                             case: str) -> None:
    line, problem, fix = CASES[case]
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    done = vlmsearch(tmp_path, line)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    assert problem in done.stderr and fix in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 8, "one message, not a dump"  # (typer boxes: 80 cols)
    assert not (tmp_path / "pwned").exists(), "a YAML never runs code"
    assert not (tmp_path / "vlmsearch-runs").exists(), "nothing created"


# ---- the corpus, in-process (tests/cli/bad_corpus.py) ---------------------------------------

FOREIGN_TABLES = {"app.db": ["customers (id INTEGER)"],
                  "mlflowish.db": ["experiments (id INTEGER)", "runs (id INTEGER)", "metrics (id INTEGER)",
                                   "params (id INTEGER)"]}


def _write(where: Path, name: str, text: str) -> None:
    path = where / name
    if text == "<dir>":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))


def _snapshot(where: Path) -> dict[str, str]:
    """Every path under `where`, with its content's hash (folders: '<dir>')."""
    return {str(p.relative_to(where)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(where.rglob("*"))}


def _case_folder(where: Path, case: Case) -> None:
    for name, tables in FOREIGN_TABLES.items():
        with contextlib.closing(sqlite3.connect(where / name)) as db:
            for table in tables:
                db.execute(f"CREATE TABLE {table}")
            db.commit()
    (where / "notes.txt").write_text("not a database\n")
    shutil.copy(EXAMPLES / "comm_point.yaml", where / "point.yaml")
    if case.text is not None:
        _write(where, "case.yaml", case.text)
    elif case.edit is not None:
        old, new = case.edit
        assert old in BASE, "the case must change the base text"
        _write(where, "case.yaml", BASE.replace(old, new, 1))
    for name, text in case.files.items():
        _write(where, name, text)


def run_in_process(line: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = ["vlmsearch", *shlex.split(line)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> None:
    case = CORPUS[name]
    _case_folder(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module in case.hide:
        monkeypatch.setitem(sys.modules, module, None)
    before = _snapshot(tmp_path)
    code, out, err = run_in_process(case.line, capsys)
    said = out + err
    assert code == 2, said
    assert "Traceback" not in said and SECRET not in said
    flat = " ".join(said.split())  # (rich wraps long lines)
    for fragment in case.says:
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{said}"
    assert _snapshot(tmp_path) == before, "nothing created or changed"


def test_the_corpus_covers_every_class() -> None:
    counts = collections.Counter(case.cls for case in CORPUS.values())
    assert set(counts) >= {1, 2, 3, 4, 5, 6, 7, 8, 11}, counts
    assert len(CORPUS) + len(CASES) >= 150
