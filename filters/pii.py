"""PII redaction: e-mail addresses, phone numbers, IPv4/IPv6 addresses, credit-card
numbers (Luhn-checked) and secrets common in code (cloud keys, tokens, private-key
blocks).  Each span is replaced by a typed placeholder (``<EMAIL>``, ``<PHONE>``,
``<IP_ADDRESS>``, ``<CREDIT_CARD>``, ``<SECRET>`` ... configurable) and counted per
type; the counts flow into ``ledger.json`` ("modified") and the manifest.

Regexes are compiled once; cheap guards (``"@" in text``, a digit, ``"-----BEGIN"``)
skip the scans that cannot match.  Candidates are validated before redaction:
IPs with :mod:`ipaddress` (by default only globally routable ones: 127.0.0.1,
10.x, documentation ranges stay), card numbers with the Luhn checksum and a known
issuer prefix, phone numbers by digit count.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from filters.base import TransformResult
from filters.normalize import dedup_key
from filters.schema import content_hash

PII_TYPES = ("email", "phone", "ipv4", "ipv6", "credit_card", "secret")


class PIIConfig(BaseModel):
    """``pii:`` section of configs/corpus.yaml."""

    model_config = ConfigDict(extra="forbid")
    types: list[str] = list(PII_TYPES)
    #: only redact globally routable IP addresses (not 127.0.0.1, 10.0.0.0/8, ...)
    public_ips_only: bool = True
    placeholders: dict[str, str] = {
        "email": "<EMAIL>", "phone": "<PHONE>", "ipv4": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>",
        "credit_card": "<CREDIT_CARD>", "secret": "<SECRET>",
    }

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in PII_TYPES]
        if bad:
            raise ValueError(f"unknown PII type(s) {bad} (choose from {list(PII_TYPES)})")
        return v


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,6}|[0-9A-Fa-f]{1,4})(?:%\w+)?(?![\w:])"
    r"|(?<![\w:])::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}(?![\w:])"
)
# International (+CC ...) or North-American formats; 7-15 digits overall.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4})(?![\w])"
)
_HEXGROUP = re.compile(r"[0-9A-Fa-f]{1,4}")
_IPV6_HINT = re.compile(r"[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}:")
# 13-19 digits, contiguous or in groups of 4 (4-6-5 for Amex)
_CARD = re.compile(r"(?<![\d.,-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})(?![\d-])")
_SECRETS = [
    ("private_key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("aws_access_key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("aws_secret_key", re.compile(
        r"(?i)(?<=aws_secret_access_key)(?:[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b")),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b")),
    ("openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")),
]
_DIGIT = re.compile(r"\d")
# "version 9.2.1.4", "v4.2.13.1": dotted version numbers are not addresses
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version|vers\.|release|rev\.?)\s*$")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9])|3(?:0[0-5]|[68])|35)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class PIIRedactor:
    """``DocTransform``: replaces PII spans with typed placeholders and counts them."""

    name = "pii"
    stage = "pii"

    def __init__(self, config: PIIConfig | None = None):
        self.config = config or PIIConfig()
        self._types = set(self.config.types)

    # -- candidate finders: yield (start, end, type)
    def _ip_ok(self, s: str) -> bool:
        try:
            ip = ipaddress.ip_address(s.split("%", 1)[0])
        except ValueError:
            return False
        return (ip.is_global and not ip.is_multicast) if self.config.public_ips_only else True

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping PII spans (earlier and longer spans win), sorted."""
        spans: list[tuple[int, int, str]] = []
        t = self._types
        if "secret" in t:
            for kind, rx in _SECRETS:
                if kind == "private_key" and "PRIVATE KEY" not in text:
                    continue
                for m in rx.finditer(text):
                    spans.append((m.start(), m.end(), "secret"))
        if "email" in t and "@" in text:
            spans += [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
        has_digit = _DIGIT.search(text) is not None
        if has_digit:
            if "ipv4" in t and "." in text:
                spans += [(m.start(), m.end(), "ipv4") for m in _IPV4.finditer(text)
                          if self._ip_ok(m.group()) and not _VERSION_BEFORE.search(text, max(0, m.start() - 16), m.start())]
            if "credit_card" in t:
                for m in _CARD.finditer(text):
                    digits = re.sub(r"\D", "", m.group())
                    if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_ok(digits):
                        spans.append((m.start(), m.end(), "credit_card"))
            if "phone" in t:
                for m in _PHONE.finditer(text):
                    nd = sum(c.isdigit() for c in m.group())
                    if 7 <= nd <= 15:
                        spans.append((m.start(), m.end(), "phone"))
        if "ipv6" in t and ":" in text and ("::" in text or _IPV6_HINT.search(text)):
            spans += [(m.start(), m.end(), "ipv6") for m in _IPV6.finditer(text)
                      if len(_HEXGROUP.findall(m.group())) >= 3 and self._ip_ok(m.group())]
        if not spans:
            return []
        # resolve overlaps: earliest start, then longest
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out: list[tuple[int, int, str]] = []
        last_end = -1
        for s in spans:
            if s[0] >= last_end:
                out.append(s)
                last_end = s[1]
        return out

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        spans = self.find(text)
        if not spans:
            return text, {}
        parts, counts, pos = [], {}, 0
        for s, e, kind in spans:
            parts.append(text[pos:s])
            parts.append(self.config.placeholders.get(kind, f"<{kind.upper()}>"))
            counts[kind] = counts.get(kind, 0) + 1
            pos = e
        parts.append(text[pos:])
        return "".join(parts), counts

    def apply(self, doc: dict[str, Any]) -> TransformResult:
        new, counts = self.redact(doc["text"])
        if not counts:
            return TransformResult(doc=doc)
        out = {**doc, "text": new, "content_hash": content_hash(dedup_key(new))}
        return TransformResult(doc=out, counts=counts, modified=True)
