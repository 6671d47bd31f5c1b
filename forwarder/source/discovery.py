"""Discovery: paths and globs (minus `exclude`) -> the files to follow, and the directories to watch."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator


def excluded(path: str, exclude: Iterable[str]) -> bool:
    """Does an `exclude` glob match the whole path or the file name?"""
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in exclude)


def expand(patterns: Iterable[str], exclude: Iterable[str] = ()) -> Iterator[str]:
    """Each path named by `patterns` once, in pattern order (glob matches sorted); excluded ones left out.

    A pattern without glob characters is yielded as given, whether or not it exists yet.
    """
    exclude = list(exclude)
    seen: set[str] = set()
    for pattern in patterns:
        paths = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            if path in seen or excluded(path, exclude):
                continue
            seen.add(path)
            yield path


def watched_dirs(patterns: Iterable[str]) -> dict[str, bool]:
    """Directories whose changes should wake the tailer -> watch recursively?"""
    dirs: dict[str, bool] = {}
    for pattern in patterns:
        parts = os.path.abspath(pattern).split(os.sep)
        magic = [i for i, part in enumerate(parts) if glob.has_magic(part)]
        if not magic:
            base, recursive = os.sep.join(parts[:-1]), False
        else:
            base, recursive = os.sep.join(parts[: magic[0]]), magic[0] < len(parts) - 1
        base = base or os.sep
        dirs[base] = dirs.get(base, False) or recursive
    return dirs
