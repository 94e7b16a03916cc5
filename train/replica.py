"""In-memory replica of the train state, held by a process that outlives the trainer.

Why: restoring from persistent storage after an unplanned failure costs a read of the
whole checkpoint plus every step since it was written.  A redundant copy of the state
in host memory outside the trainer (the Gemini report's "redundant in-memory copies")
restores in a memory copy and loses at most ``replica.every`` steps.  Orbax's in-memory
managers are experimental and MaxText's emergency checkpointing needs GKE; this needs a
Linux host and nothing else.

How:
* The **holder** (``python -m train.replica serve``) is a small numpy-free process the
  trainer starts in its own session (``start_new_session=True``), so a SIGKILL of the
  trainer or of its process group leaves it running.  It owns three memory slots
  (``memfd_create``: anonymous shared memory, no /dev/shm size limit, freed by the kernel
  when the holder exits) and answers requests on an abstract Unix socket named after the
  run directory (SOCK_SEQPACKET, JSON messages, slot file descriptors passed with
  SCM_RIGHTS; only processes of the same user are served).
* **Multiple buffering**: a refresh writes into the slot holding the oldest replica, never
  into the two newest.  ``open`` first marks that slot invalid at the holder; ``commit``
  (sent only after the write finished and the guard passed that step) marks it complete
  with its step.  A trainer killed mid-write leaves an invalid slot and complete ones:
  ``latest`` only ever returns a committed slot ("the freshest complete replica").  Three
  slots let a refresh every step keep the freshest state for restarts and, one older,
  the state the loss guard rolls back to.
* A slot holds the state's tensors (64-byte aligned) followed by a JSON manifest: tensor
  paths, dtypes, shapes, offsets, per-tensor checksums (train/integrity.py), the data
  source's state and the config/data fingerprints.  Restore verifies the checksums after
  the copy back to the devices (end to end), so a torn or corrupted replica is refused
  and the trainer falls back to its checkpoints.
* The holder exits on ``shutdown`` (the trainer sends it when the run completes) or after
  ``idle_timeout_s`` with no trainer connected; ``<run_dir>/replica/holder.json`` names
  its pid.

Limits: one process per job (all devices addressable, as on one host); a multi-host job
would keep one holder per host for its own shards plus a copy on a peer host.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import secrets
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIGN = 64
MAX_MSG = 1 << 16
N_SLOTS = 3


class ReplicaError(RuntimeError):
    pass


def address_for(run_dir: str) -> str:
    """Abstract socket name (no file to clean up) derived from the run directory."""
    h = hashlib.sha256(os.path.realpath(run_dir).encode()).hexdigest()[:24]
    return "\0corpusforge-replica-" + h


def _send(sock: socket.socket, msg: dict, fd: int | None = None) -> None:
    data = json.dumps(msg).encode()
    if fd is None:
        sock.send(data)
    else:
        socket.send_fds(sock, [data], [fd])


def _recv(sock: socket.socket) -> tuple[dict | None, int | None]:
    data, fds, _, _ = socket.recv_fds(sock, MAX_MSG, 1)
    if not data:
        return None, None
    return json.loads(data), (fds[0] if fds else None)


# ---- the holder ---------------------------------------------------------------------------------

class Holder:
    def __init__(self, address: str, token: str, idle_timeout: float):
        self.address, self.token, self.idle_timeout = address, token, idle_timeout
        self.slots: list[dict[str, Any]] = [{"fd": None, "size": 0, "step": None, "manifest": None}
                                            for _ in range(N_SLOTS)]
        self.sel = selectors.DefaultSelector()
        self.clients: set[socket.socket] = set()
        self.running = True

    def log(self, msg: str) -> None:
        print(f"[replica holder {os.getpid()} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def serve(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            srv.bind(self.address)
        except OSError as e:
            self.log(f"cannot bind {self.address[1:]!r} ({e}); another holder serves this run")
            return
        srv.listen(8)
        self.sel.register(srv, selectors.EVENT_READ)
        self.log(f"serving {self.address[1:]}")
        idle_since = time.time()
        while self.running:
            for key, _ in self.sel.select(timeout=1.0):
                if key.fileobj is srv:
                    conn, _ = srv.accept()
                    if not self._same_user(conn):
                        conn.close()
                        continue
                    self.clients.add(conn)
                    self.sel.register(conn, selectors.EVENT_READ)
                else:
                    self._serve_one(key.fileobj)
            if self.clients:
                idle_since = time.time()
            elif time.time() - idle_since > self.idle_timeout:
                self.log(f"no trainer for {self.idle_timeout:.0f}s; exiting")
                break
        for c in list(self.clients):
            c.close()
        srv.close()
        for s in self.slots:
            if s["fd"] is not None:
                os.close(s["fd"])
        self.log("stopped")

    @staticmethod
    def _same_user(conn: socket.socket) -> bool:
        try:
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
            return uid == os.getuid()
        except OSError:
            return False

    def _drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self.clients.discard(conn)
        conn.close()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            msg, fd = _recv(conn)
        except (OSError, json.JSONDecodeError):
            msg, fd = None, None
        if fd is not None:
            os.close(fd)
        if msg is None:
            self._drop(conn)
            return
        try:
            reply, out_fd = self.handle(msg)
        except Exception as e:  # a bad request must not take the replica down
            reply, out_fd = {"ok": False, "error": f"{type(e).__name__}: {e}"}, None
        try:
            _send(conn, reply, out_fd)
        except OSError:
            self._drop(conn)

    def _public(self) -> list[dict]:
        return [{"slot": i, "size": s["size"], "step": s["step"]} for i, s in enumerate(self.slots)]

    def handle(self, msg: dict) -> tuple[dict, int | None]:
        op = msg.get("op")
        if op == "hello":
            return {"ok": True, "pid": os.getpid(), "token": self.token, "slots": self._public()}, None
        if op == "reset":
            for s in self.slots:
                s["step"] = s["manifest"] = None
            self.token = msg["token"]
            self.log("reset (a fresh run in this directory)")
            return {"ok": True}, None
        if op == "open":
            i, size = int(msg["slot"]), int(msg["size"])
            s = self.slots[i]
            s["step"] = s["manifest"] = None                  # invalid until committed again
            if s["fd"] is None or s["size"] != size:
                if s["fd"] is not None:
                    os.close(s["fd"])
                s["fd"] = os.memfd_create(f"corpusforge-replica-{i}", os.MFD_CLOEXEC)
                os.ftruncate(s["fd"], size)
                s["size"] = size
            return {"ok": True, "slot": i, "size": size}, s["fd"]
        if op == "commit":
            s = self.slots[int(msg["slot"])]
            if s["fd"] is None:
                return {"ok": False, "error": "commit of a slot that was never opened"}, None
            s["step"], s["manifest"] = int(msg["step"]), [int(msg["manifest_off"]), int(msg["manifest_len"])]
            return {"ok": True}, None
        if op == "latest":
            limit = msg.get("max_step")
            ok = [(s["step"], i) for i, s in enumerate(self.slots)
                  if s["step"] is not None and (limit is None or s["step"] <= limit)]
            if not ok:
                return {"ok": True, "slot": None}, None
            step, i = max(ok)
            s = self.slots[i]
            return {"ok": True, "slot": i, "step": step, "size": s["size"], "manifest": s["manifest"]}, s["fd"]
        if op == "invalidate":
            s = self.slots[int(msg["slot"])]
            s["step"] = s["manifest"] = None
            return {"ok": True}, None
        if op == "shutdown":
            self.running = False
            return {"ok": True}, None
        return {"ok": False, "error": f"unknown op {op!r}"}, None


# ---- the trainer's side ---------------------------------------------------------------------------

class ReplicaClient:
    """Connects to (or starts) the holder of ``run_dir`` and speaks its protocol."""

    def __init__(self, run_dir: str, *, idle_timeout: float = 600.0, spawn: bool = True, say=print):
        """Connects to the run's holder; if there is none, starts one (``spawned``) without
        waiting for it: a new holder holds no replica, and the first request waits."""
        self.run_dir = os.path.abspath(run_dir)
        self.dir = os.path.join(self.run_dir, "replica")
        self.info_path = os.path.join(self.dir, "holder.json")
        self.address = address_for(self.run_dir)
        self.say = say
        self.lock = threading.RLock()
        self.sock: socket.socket | None = None
        self.maps: dict[int, tuple[mmap.mmap, int]] = {}
        self.pid: int | None = None
        self.info = self._read_info()
        self.token = self.info.get("token") if self.info else None
        self.spawned = False
        if not self._connect():
            if not spawn:
                raise ReplicaError(f"no replica holder for {self.run_dir}")
            self.token = self.token or secrets.token_hex(8)
            self.proc = self._spawn(self.token, idle_timeout)
            self.spawned = True
            self.pid = self.proc.pid
        else:
            self._hello()

    def _hello(self) -> None:
        hello = self._request({"op": "hello"})[0]
        self.pid = hello["pid"]
        if self.token is None or hello["token"] != self.token:
            # no holder.json (a fresh run dir, e.g. --fresh): whatever the holder has is stale
            self.token = self.token or secrets.token_hex(8)
            self._request({"op": "reset", "token": self.token})
        info = {"pid": self.pid, "token": self.token, "address": self.address[1:]}
        if self.info != info:
            os.makedirs(self.dir, exist_ok=True)
            with open(self.info_path + ".tmp", "w") as f:
                json.dump(info, f)
            os.replace(self.info_path + ".tmp", self.info_path)
            self.info = info

    def _ensure(self) -> None:
        """Wait for a holder this client started."""
        if self.sock is not None:
            return
        deadline = time.time() + 30
        while time.time() < deadline:
            if self._connect():
                self._hello()
                return
            if self.spawned and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise ReplicaError(f"the replica holder did not start (see {os.path.join(self.dir, 'holder.log')})")

    def _read_info(self) -> dict | None:
        try:
            with open(self.info_path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return None

    def _connect(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(self.address)
        except OSError:
            s.close()
            return False
        self.sock = s
        return True

    def _spawn(self, token: str, idle_timeout: float) -> subprocess.Popen:
        os.makedirs(self.dir, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(os.path.join(self.dir, "holder.log"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "train.replica", "serve", "--address", self.address[1:],
                                     "--token", token, "--idle-timeout", str(idle_timeout)],
                                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        os.makedirs(self.dir, exist_ok=True)
        info = {"pid": proc.pid, "token": token, "address": self.address[1:]}
        with open(self.info_path + ".tmp", "w") as f:
            json.dump(info, f)
        os.replace(self.info_path + ".tmp", self.info_path)
        self.info = info
        return proc

    def request(self, msg: dict) -> tuple[dict, int | None]:
        with self.lock:
            self._ensure()
        return self._request(msg)

    def _request(self, msg: dict) -> tuple[dict, int | None]:
        with self.lock:
            if self.sock is None:
                raise ReplicaError("not connected to the replica holder")
            try:
                _send(self.sock, msg)
                reply, fd = _recv(self.sock)
            except OSError as e:
                raise ReplicaError(f"replica holder: {e}") from None
        if reply is None:
            raise ReplicaError("the replica holder closed the connection")
        if not reply.get("ok"):
            if fd is not None:
                os.close(fd)
            raise ReplicaError(f"replica holder: {reply.get('error')}")
        return reply, fd

    def slots(self) -> list[dict]:
        return self.request({"op": "hello"})[0]["slots"]

    def open_slot(self, slot: int, size: int) -> mmap.mmap:
        """Invalidate ``slot`` at the holder and map it for writing."""
        reply, fd = self.request({"op": "open", "slot": slot, "size": size})
        try:
            old = self.maps.pop(slot, None)
            if old is not None:
                old[0].close()
            m = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.maps[slot] = (m, size)
        return m

    def commit(self, slot: int, step: int, manifest_off: int, manifest_len: int) -> None:
        m = self.maps.get(slot)
        if m is not None:
            m[0].flush()
        self.request({"op": "commit", "slot": slot, "step": step, "manifest_off": manifest_off,
                      "manifest_len": manifest_len})

    def invalidate(self, slot: int) -> None:
        self.request({"op": "invalidate", "slot": slot})

    def latest(self, max_step: int | None = None) -> tuple[dict, "SlotFile"] | None:
        """(manifest, slot file) of the freshest committed slot (at or before ``max_step``),
        or None.  The caller closes the slot file."""
        reply, fd = self.request({"op": "latest", "max_step": max_step})
        if reply["slot"] is None:
            return None
        f = SlotFile(fd)
        off, n = reply["manifest"]
        try:
            manifest = json.loads(os.pread(fd, n, off))
        except (OSError, ValueError):
            f.close()
            raise
        manifest["slot"], manifest["committed_step"] = reply["slot"], reply["step"]
        return manifest, f

    def shutdown(self) -> None:
        try:
            self.request({"op": "shutdown"})
        except ReplicaError:
            pass
        self.close()

    def close(self) -> None:
        for m, _ in self.maps.values():
            try:
                m.close()
            except BufferError:     # a numpy view still alive; the mapping goes with the process
                pass
        self.maps.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SlotFile:
    """A committed slot, read with pread (no page faults of a fresh mapping)."""

    def __init__(self, fd: int):
        self.fd = fd

    def read_into(self, buf, offset: int) -> None:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise ReplicaError("short read from a replica slot")
            done += n

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---- slot layout --------------------------------------------------------------------------------

def dtype_of(name: str):
    """numpy dtype from its name, including ml_dtypes' bfloat16 / float8 types."""
    import numpy as np
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))


def layout(shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple[list[int], int]:
    """64-byte aligned offsets of the tensors (dtypes by name) and the end of the tensor area."""
    import numpy as np
    offs, pos = [], 0
    for shape, dt in zip(shapes, dtypes):
        offs.append(pos)
        n = int(np.prod(shape, dtype=np.int64)) * dtype_of(dt).itemsize
        pos += (n + ALIGN - 1) // ALIGN * ALIGN
    return offs, pos


def write_slot(m: mmap.mmap, arrays: list, manifest: dict) -> tuple[int, int]:
    """Copy host arrays and the manifest into a mapped slot; returns (manifest offset, length)."""
    import numpy as np
    for a, off in zip(arrays, manifest["offsets"]):
        a = np.asarray(a)
        dst = np.frombuffer(m, dtype=a.dtype, count=a.size, offset=off).reshape(a.shape)
        np.copyto(dst, a)
        del dst
    blob = json.dumps(manifest).encode()
    off = manifest["data_bytes"]
    m[off:off + len(blob)] = blob
    return off, len(blob)


def read_slot(f: "SlotFile", manifest: dict) -> list:
    """The slot's tensors, read into fresh arrays."""
    import numpy as np
    out = []
    for dt, shape, off in zip(manifest["dtypes"], manifest["shapes"], manifest["offsets"]):
        a = np.empty(shape, dtype_of(dt))
        if a.size:
            f.read_into(a.reshape(-1).view(np.uint8), off)
        out.append(a)
    return out


def slot_size(data_bytes: int, manifest_bytes: int) -> int:
    """Room for the manifest with slack, rounded to 1 MiB so refreshes reuse the slot."""
    need = data_bytes + 2 * manifest_bytes + (1 << 16)
    return (need + (1 << 20) - 1) // (1 << 20) * (1 << 20)


# ---- CLI ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.replica",
                                description="The in-memory replica holder (started by the trainer).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="hold replicas for one run (the trainer starts this)")
    s.add_argument("--address", required=True, help="abstract socket name (without the leading NUL)")
    s.add_argument("--token", required=True)
    s.add_argument("--idle-timeout", type=float, default=600.0)
    st = sub.add_parser("status", help="what the holder of a run dir holds")
    st.add_argument("--run-dir", required=True)
    sd = sub.add_parser("stop", help="stop the holder of a run dir (its replica is lost)")
    sd.add_argument("--run-dir", required=True)
    a = p.parse_args(argv)
    if a.cmd == "serve":
        Holder("\0" + a.address, a.token, a.idle_timeout).serve()
        return 0
    try:
        c = ReplicaClient(a.run_dir, spawn=False)
    except ReplicaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.cmd == "status":
        print(json.dumps({"pid": c.pid, "slots": c.slots()}, indent=1))
        c.close()
    else:
        c.shutdown()
        print(f"stopped replica holder {c.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
