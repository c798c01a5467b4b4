"""Folders a command will write into, checked before anything is created: a folder under a file,
a file where a folder is meant, or a place the user cannot write gives one message, not a
NotADirectoryError after a database was made."""

from __future__ import annotations

import os
from pathlib import Path


def folder_problem(path: Path, flag: str) -> str | None:
    """Why `path` cannot be (or become) a folder this process writes into, or None."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return f"{flag} '{path}' is a file, not a folder; give a folder (or a path that does not exist yet)"
    return _under_problem(path, flag)


def _under_problem(path: Path, flag: str) -> str | None:
    """Why nothing can be created at `path` (which does not exist) for what is above it."""
    ancestor = next((p for p in (path, *path.parents) if p.exists()), None)
    if ancestor is None:
        return None
    if not ancestor.is_dir():
        return (f"{flag} '{path}' lies under '{ancestor}', which is a file, not a folder; "
                "give a path under a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{flag} '{path}': '{ancestor}' is not writable by this user; give a folder you can write"
    return None


def file_problem(path: Path, flag: str) -> str | None:
    """Why `path` cannot be (or become) a file written here (e.g. a SQLite database), or None."""
    path = Path(path).expanduser()
    if path.is_dir():
        return f"{flag} '{path}' is a folder, not a file; name a file inside it, e.g. '{path / 'results.db'}'"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else (
            f"{flag} '{path}' is not readable and writable by this user; fix its permissions or give "
            "another file")
    return _under_problem(path, flag)
