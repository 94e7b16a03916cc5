"""Checksums: per-tensor fingerprints of the train state, and sha256 of checkpoint files.

Orbax restores a checkpoint whose array file had a bit flipped without complaint (the
flipped value comes back), so the trainer writes its own checksums next to each
checkpoint and verifies them before trusting it:

* ``tree_checksums(tree)``: per tensor, two 32-bit sums of the raw bits, computed on the
  device: ``sum(w)`` and ``sum(w * (2i + 1))`` over the tensor's 32-bit words w (16- and
  8-bit types are widened), modulo 2^32.  Integer sums are exact in any order, so the
  result does not depend on the mesh or the reduction order; any single flipped bit
  changes both sums (an odd multiple of 2^k is never 0 mod 2^32), and the weighted sum
  also catches values moved to other positions.  One pass over the state (cheap next to
  a step).  Used for replicas, checkpoints and the replay records.
* ``write_manifest`` / ``verify_files``: sha256 of every file of a finished checkpoint in
  ``<run_dir>/checksums/<step>.json``; a mismatch names the file, and restore skips to the
  previous good checkpoint.  (The files are what rots on disk; tensor checksums of the
  state are kept for replicas and the replay records, where they are checked end to end.)
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def leaf_paths(tree: Any) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _words(x: jax.Array) -> jax.Array:
    x = jnp.ravel(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if size == 1:
        return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    if size == 8:
        return jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))
    raise TypeError(f"no checksum for dtype {x.dtype}")


def _leaf_sums(x: jax.Array) -> jax.Array:
    w = _words(x)
    odd = jnp.arange(w.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * odd, dtype=jnp.uint32)])


@jax.jit
def _tree_sums(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.stack([_leaf_sums(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def tree_checksums(tree: Any) -> jax.Array:
    """uint32[n_leaves, 2] on the device (dispatched asynchronously); see the module doc."""
    return _tree_sums(tree)


_CHUNK = 1 << 16
_ODD = np.arange(_CHUNK, dtype=np.uint32) * np.uint32(2) + np.uint32(1)


def _host_words(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a).reshape(-1)
    if a.dtype == np.bool_ or a.dtype.itemsize == 1:
        return a.view(np.uint8).astype(np.uint32)
    if a.dtype.itemsize == 2:
        return a.view(np.uint16).astype(np.uint32)
    return a.view(np.uint32)


def host_checksums(arrays: list[np.ndarray]) -> np.ndarray:
    """The same sums in numpy (chunked: no full-size temporaries).  On the CPU backend this
    is several times faster than XLA, whose integer element-wise loops are not vectorized."""
    out = np.zeros((len(arrays), 2), np.uint32)
    tmp = np.empty(_CHUNK, np.uint32)
    with np.errstate(over="ignore"):
        for i, a in enumerate(arrays):
            w = _host_words(a)
            s0, s1 = np.uint32(w.sum(dtype=np.uint32)), np.uint32(0)
            for off in range(0, w.size, _CHUNK):
                c = w[off:off + _CHUNK]
                m = c.size
                np.multiply(c, _ODD[:m], out=tmp[:m])
                # sum (2(off+j)+1) c_j = sum (2j+1) c_j + 2 off sum c_j   (mod 2^32)
                s1 = np.uint32(s1 + tmp[:m].sum(dtype=np.uint32)
                               + np.uint32((2 * off) & 0xFFFFFFFF) * np.uint32(c.sum(dtype=np.uint32)))
            out[i] = (s0, s1)
    return out


def checksums(tree: Any) -> np.ndarray:
    """uint32[n_leaves, 2] now: numpy for host data and CPU-backed arrays (zero-copy views;
    they must be ready and not donated meanwhile), the device otherwise."""
    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or all(d.platform == "cpu" for d in x.devices()) for x in leaves):
        return host_checksums([np.asarray(x) for x in leaves])
    return np.asarray(tree_checksums(tree))


def as_dict(paths: list[str], sums: Any) -> dict[str, list[int]]:
    sums = np.asarray(sums)
    return {p: [int(a), int(b)] for p, (a, b) in zip(paths, sums)}


def fmt_sum(v: list[int]) -> str:
    return f"{v[0]:08x}:{v[1]:08x}"


def diff_sums(expected: dict[str, list[int]], got: dict[str, list[int]]) -> list[str]:
    """Tensor paths whose checksums differ (or are missing on one side), in order."""
    return [p for p in expected if list(got.get(p, [])) != list(expected[p])] + [p for p in got if p not in expected]


# ---- checkpoint files -----------------------------------------------------------------------

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(step_dir: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, step_dir)] = _sha256(p)
    return dict(sorted(out.items()))


def manifest_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checksums", f"{step}.json")


def step_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", str(step))


def is_finished(run_dir: str, step: int) -> bool:
    """Orbax renames the temporary directory to ``<step>`` and writes commit_success.txt
    when a save is complete."""
    d = step_dir(run_dir, step)
    if not os.path.isdir(d):
        return False
    parent = os.path.dirname(d)
    tmp = [n for n in os.listdir(parent) if n.startswith(f"{step}.orbax-checkpoint-tmp")]
    return not tmp and os.path.exists(os.path.join(d, "commit_success.txt"))


def wait_finished(run_dir: str, step: int, timeout: float = 600.0) -> bool:
    t = time.time() + timeout
    while time.time() < t:
        if is_finished(run_dir, step):
            return True
        time.sleep(0.05)
    return False


def write_manifest(run_dir: str, step: int) -> dict:
    """sha256 of the finished checkpoint's files."""
    m = {"step": step, "files": file_digests(step_dir(run_dir, step)), "time": time.time()}
    path = manifest_path(run_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(m, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return m


def read_manifest(run_dir: str, step: int) -> dict | None:
    try:
        with open(manifest_path(run_dir, step), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def verify_files(run_dir: str, step: int) -> tuple[bool | None, str]:
    """(True, "") when every file matches; (False, what) naming the first bad file; (None,
    why) when there is no manifest (a kill between the save and its checksums)."""
    m = read_manifest(run_dir, step)
    if m is None:
        return None, "no checksums recorded"
    d = step_dir(run_dir, step)
    have = file_digests(d)
    for rel, digest in m["files"].items():
        if rel not in have:
            return False, f"{rel} is missing"
        if have[rel] != digest:
            return False, f"{rel} has sha256 {have[rel][:12]}..., recorded {digest[:12]}..."
    extra = sorted(set(have) - set(m["files"]))
    if extra:
        return False, f"unexpected file {extra[0]}"
    return True, ""


def prune_manifests(run_dir: str, keep_steps: set[int]) -> None:
    d = os.path.join(run_dir, "checksums")
    if not os.path.isdir(d):
        return
    for name in os.listdir(d):
        stem = name.split(".")[0]
        if stem.isdigit() and int(stem) not in keep_steps and name.endswith(".json"):
            try:
                os.remove(os.path.join(d, name))
            except OSError:
                pass
