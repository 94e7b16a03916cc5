"""Small things the tokenizer CLIs share: one-line usage errors, logging, Beam flags."""
from __future__ import annotations

import logging
import os
import sys


class UsageError(ValueError):
    """A bad flag, a missing file or a bad config: printed as one line, exit 2."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("apache_beam", "absl", "tensorflow_datasets", "etils"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


class Progress:
    """Time-based progress lines from inside a Beam worker (every ``every`` seconds)."""

    def __init__(self, what: str, every: float = 30.0):
        import time

        self._what, self._every, self._time = what, every, time.monotonic
        self._start = self._last = self._time()
        self.counts: dict[str, int] = {}

    def add(self, **counts: int) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        now = self._time()
        if now - self._last >= self._every:
            self._last = now
            rate = {k: v / max(now - self._start, 1e-9) for k, v in self.counts.items()}
            logging.getLogger("tokenizer.progress").info(
                "%s: %s", self._what, ", ".join(f"{v:,} {k} ({rate[k]:,.0f}/s)" for k, v in self.counts.items()))


def check_beam_flags(flags: list[str]) -> None:
    """Beam silently ignores flags it does not know; refuse them instead (typos)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__():
        cls._add_argparse_args(parser)  # noqa: SLF001 - the discovery Beam itself uses
        for sub in cls.__subclasses__():
            sub._add_argparse_args(parser)  # noqa: SLF001
    _, unknown = parser.parse_known_args(flags)
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)} (see --help; Beam flags like --runner pass through)")


def ensure_importable() -> None:
    """Beam workers started as subprocesses (multi-processing runner) import our
    modules by name: make the repository root importable for them."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + parts)


def main_wrapper(run, prog: str, argv=None) -> int:
    """Run ``run(argv)``; user-facing errors become one line on stderr and exit 2."""
    from tokenizer.config import ConfigError
    from tokenizer.corpus import CorpusError
    from tokenizer.format import FingerprintMismatch, FormatError
    from tokenizer.sp import TrainError

    try:
        run(argv)
    except (UsageError, ConfigError, CorpusError, FingerprintMismatch, FormatError, TrainError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
