"""A files agent on a sandbox folder: listing and reading run at once, moving and deleting stop for
approval. Every path is confined to the folder: absolute paths, `..` and symlinks are refused.

    AGENTS=examples.files_agent.agent FILES_AGENT_ROOT=/srv/scratch scripts/run

FILES_AGENT_ROOT defaults to `instance/files-sandbox`, created with two sample files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from app.sdk import Agent, Field, ToolError, tool

MAX_READ_BYTES = 20_000
RelativePath = Annotated[str, Field(min_length=1, max_length=500)]


def sandbox() -> Path:
    root = Path(os.environ.get("FILES_AGENT_ROOT") or Path("instance") / "files-sandbox").resolve()
    if not root.exists():
        root.mkdir(parents=True)
        (root / "readme.txt").write_text("Files here can be listed, read, moved and deleted by the Files agent.\n")
        (root / "drafts").mkdir()
        (root / "drafts" / "old-notes.txt").write_text("Notes nobody needs any more.\n")
    return root


def confined(path: str, *, must_exist: bool = True) -> Path:
    """`path` inside the sandbox, or ToolError: no absolute paths, no `..`, no symlinks anywhere."""
    relative = Path(path.strip())
    if relative.is_absolute() or path.strip().startswith("~"):
        raise ToolError(f"{path!r} is not a path inside the sandbox: give it relative to the sandbox folder.")
    if ".." in relative.parts:
        raise ToolError(f"{path!r} leaves the sandbox ('..' is not allowed).")
    root = sandbox()
    candidate = root
    for part in relative.parts:
        candidate = candidate / part
        if candidate.is_symlink():
            raise ToolError(f"{path!r} goes through a symbolic link, which is not allowed.")
    if not candidate.resolve().is_relative_to(root):
        raise ToolError(f"{path!r} leaves the sandbox.")
    if must_exist and not candidate.exists():
        raise ToolError(f"There is no {path!r} in the sandbox.")
    return candidate


def _show(path: Path) -> str:
    return path.relative_to(sandbox()).as_posix() or "."


@tool
def list_files(folder: RelativePath = ".") -> str:
    """List the files and folders in a folder of the sandbox.

    Args:
        folder: The folder, relative to the sandbox ("." for the sandbox itself).
    """
    target = confined(folder)
    if not target.is_dir():
        raise ToolError(f"{folder!r} is a file, not a folder.")
    entries = sorted(target.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    lines = [f"{_show(p)}/" if p.is_dir() else f"{_show(p)} ({p.stat().st_size:,} bytes)"
             for p in entries if not p.is_symlink()]
    return "\n".join(lines) or f"{_show(target)} is empty."


@tool
def read_file(path: RelativePath) -> str:
    """Read a text file of the sandbox (the first 20,000 bytes).

    Args:
        path: The file, relative to the sandbox.
    """
    target = confined(path)
    if not target.is_file():
        raise ToolError(f"{path!r} is not a file.")
    return target.read_bytes()[:MAX_READ_BYTES].decode("utf-8", "replace")


def _preview_move(_ctx, arguments: dict) -> str:
    return f"Moves {arguments['source']} to {arguments['destination']}."


@tool(requires_confirmation=True, preview=_preview_move)
def move_file(source: RelativePath, destination: RelativePath) -> str:
    """Move or rename a file or folder inside the sandbox. Asks for confirmation first.

    Args:
        source: What to move, relative to the sandbox.
        destination: Where to, relative to the sandbox (an existing folder keeps the name).
    """
    origin = confined(source)
    target = confined(destination, must_exist=False)
    if target.is_dir():
        target = target / origin.name
    if target.exists():
        raise ToolError(f"{_show(target)} already exists; nothing was moved.")
    if not target.parent.is_dir():
        raise ToolError(f"The folder {_show(target.parent)} does not exist.")
    origin.rename(target)
    return f"Moved {_show(origin)} to {_show(target)}."


def _preview_delete(_ctx, arguments: dict) -> str:
    return f"Deletes {arguments['path']} for good."


@tool(requires_confirmation=True, preview=_preview_delete)
def delete_file(path: RelativePath) -> str:
    """Delete one file of the sandbox for good (folders are not deleted). Asks for confirmation first.

    Args:
        path: The file, relative to the sandbox.
    """
    target = confined(path)
    if not target.is_file():
        raise ToolError(f"{path!r} is not a file; only files are deleted.")
    target.unlink()
    return f"Deleted {_show(target)}."


agent = Agent(
    name="Files",
    id="files",
    description="Lists, reads, moves and deletes files in a sandbox folder; moving and deleting ask first.",
    tools=[list_files, read_file, move_file, delete_file],
    instructions=["You help the user tidy up the files of a sandbox folder.",
                  "Paths are relative to the sandbox. Check with list_files before moving or deleting."],
    markdown=True,
)
