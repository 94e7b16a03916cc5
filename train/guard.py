"""Loss-spike and NaN guard.

``LossGuard.check`` looks at each step's record: a non-finite loss or gradient norm is a
``nan`` event; a loss above ``median + max(min_delta, z * 1.4826 * MAD)`` of the last
``window`` accepted losses (after ``min_history`` of them) is a ``spike``.  What happens
next is the resilience hook's job (train/resilience.py): roll back to the last trusted state
(in-memory replica, else checkpoint, at least two steps before the bad record: record s
was computed from the state after s-1), and for ``skip`` also drop the batch that tripped
(the PaLM recipe: restart before the spike, skip the offending data).  ``rollback``
without a skip treats the event as transient; if the same batch trips again the guard
escalates to ``skip``.

``GuardedSource`` wraps the train source so a skip is exact and survives restarts: it
counts the inner source's batches, skips the listed indices, and adds the skip list to
the data state that checkpoints and replicas store (only once there is one, so runs
without events keep the plain state).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.resilience_config import GuardConfig


@dataclass
class GuardEvent:
    kind: str                 # nan | spike
    step: int
    loss: float
    grad_norm: float
    threshold: float | None
    median: float | None

    def describe(self) -> str:
        if self.kind == "nan":
            return f"non-finite loss/grad norm at step {self.step} (loss {self.loss}, grad norm {self.grad_norm})"
        return (f"loss spike at step {self.step}: {self.loss:.4f} > threshold {self.threshold:.4f} "
                f"(median of recent steps {self.median:.4f})")


class LossGuard:
    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.history: OrderedDict[int, float] = OrderedDict()   # step -> accepted loss
        self.events = 0
        self._tripped: dict[int, int] = {}                       # inner batch index -> times it tripped

    def check(self, step: int, loss: float, grad_norm: float) -> GuardEvent | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return GuardEvent("nan", step, loss, grad_norm, None, None)
        if len(self.history) >= self.cfg.min_history:
            recent = np.array(list(self.history.values())[-self.cfg.window:])
            med = float(np.median(recent))
            mad = float(np.median(np.abs(recent - med)))
            thr = med + max(self.cfg.min_delta, self.cfg.z * 1.4826 * mad)
            if loss > thr:
                return GuardEvent("spike", step, loss, grad_norm, thr, med)
        self.accept(step, loss)
        return None

    def accept(self, step: int, loss: float) -> None:
        """Count ``loss`` as normal (also a ``warn``-ed spike: the detector follows level shifts,
        e.g. a new mixture stage)."""
        self.history[step] = loss
        while len(self.history) > self.cfg.window:
            self.history.popitem(last=False)

    def action(self, ev: GuardEvent, inner_index: int | None) -> str:
        """skip | rollback | warn | stop for this event (``rollback`` escalates to ``skip``
        when the same batch already tripped once)."""
        self.events += 1
        act = self.cfg.on_nan if ev.kind == "nan" else self.cfg.on_spike
        if act in ("warn", "stop"):
            return act
        if self.events > self.cfg.max_events:
            return "stop"
        if inner_index is not None:
            seen = self._tripped.get(inner_index, 0)
            self._tripped[inner_index] = seen + 1
            if act == "rollback" and seen:
                return "skip"
        return act

    def forget_after(self, step: int) -> None:
        for s in [s for s in self.history if s > step]:
            del self.history[s]


class GuardedSource:
    """A BatchSource that skips listed batches of ``inner`` (see the module docstring)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.skip: set[int] = set()
        self.inner_n: int | None = 0        # inner batches consumed (None: unknown until rebase)
        self.base_step = 0
        self.served: list[int] = []         # inner index of each batch served since rebase

    def __getattr__(self, name: str) -> Any:   # batch_size, seq_len, vocab_size, source_names, fingerprint, ...
        return getattr(self.inner, name)

    def get_state(self) -> dict[str, Any]:
        st = self.inner.get_state()
        if self.skip:
            st = {**st, "guard": {"skip": sorted(self.skip), "inner_n": self.inner_n}}
        return st

    def set_state(self, state: dict[str, Any]) -> None:
        g = state.get("guard") if isinstance(state, dict) else None
        self.inner.set_state({k: v for k, v in state.items() if k != "guard"} if g else state)
        if g:
            self.skip, self.inner_n = set(int(i) for i in g["skip"]), int(g["inner_n"])
        else:   # no skips yet: inner batches consumed == steps done (set by rebase)
            self.skip, self.inner_n = set(), None

    def rebase(self, step: int) -> None:
        """The state just restored is that of ``step``."""
        if self.inner_n is None:
            self.inner_n = step
        self.base_step, self.served = step, []

    def next_batch(self) -> dict[str, np.ndarray]:
        while self.inner_n in self.skip:
            self.inner.next_batch()
            self.inner_n += 1
        batch = self.inner.next_batch()
        idx = self.inner_n
        self.inner_n += 1
        self.served.append(idx)
        return batch

    def index_for_step(self, step: int) -> int | None:
        i = step - self.base_step - 1
        return self.served[i] if 0 <= i < len(self.served) else None
