"""Word, sentence, line and script segmentation that works for every language.

The peers' rule sets split words on whitespace (datatrove issue #135), so a
Chinese, Japanese or Thai document is "one word" and fails every rule.  Here:

* ``tokens(text)`` gives word and punctuation tokens.  Text in scripts written
  with spaces (Latin, Cyrillic, Arabic, Devanagari, Hangul, ...) is split by a
  precompiled regex in a spaCy-like way (punctuation split off, numbers and
  intra-word apostrophes kept together) — fast, because it runs on every
  document.  A document containing any character of a script written *without*
  spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Tibetan) goes
  through ICU's dictionary-based word ``BreakIterator`` instead (PyICU, ICU's
  own data: no model download).
* ``sentence_count(line)`` counts sentences by Unicode terminal punctuation
  (``. ! ? 。 ！ ？ । ॥ ؟ ۔ ። …``), with or without a following space.
* ``script_profile(text)`` counts letters per Unicode script (ICU's script
  property, tabulated once into a numpy lookup table) and reports the dominant
  script, its share and the share of combining marks.

Nothing here loads data from the network; everything is deterministic.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np
import regex

# ----------------------------------------------------------------------------- scripts
#: Scripts written without spaces between words: these need a dictionary segmenter.
NO_SPACE_SCRIPTS = ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan")

# Ranges of the no-space scripts (BMP blocks + CJK extension planes); a search
# for one of these characters decides which tokenizer a document needs.
_NO_SPACE_RE = re.compile(
    "["
    "\u0e00-\u0e7f"   # Thai
    "\u0e80-\u0eff"   # Lao
    "\u0f00-\u0fff"   # Tibetan
    "\u1000-\u109f"   # Myanmar
    "\u1780-\u17ff\u19e0-\u19ff"  # Khmer
    "\u2e80-\u2fdf"   # CJK radicals
    "\u3005-\u3007\u3021-\u3029\u3038-\u303b"  # CJK ideographic marks
    "\u3040-\u30ff"   # Hiragana, Katakana
    "\u31f0-\u31ff"   # Katakana ext
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\uff66-\uff9f"   # half-width Katakana
    "\U00020000-\U0003ffff"  # Han ext B+
    "]"
)

_SCRIPT_NAMES: list[str] = []
_SCRIPT_TABLE: np.ndarray | None = None
_MARK_TABLE: np.ndarray | None = None
_TABLE_LOCK = threading.Lock()


def _build_tables() -> None:
    """Script id and is-combining-mark per BMP code point, from ICU + unicodedata."""
    global _SCRIPT_TABLE, _MARK_TABLE
    import unicodedata

    import icu

    names: dict[str, int] = {"Common": 0}
    table = np.zeros(0x10000, dtype=np.uint8)
    marks = np.zeros(0x10000, dtype=np.bool_)
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] == "M":
            marks[cp] = True
        if cat[0] != "L":  # only letters vote for a script
            continue
        name = icu.Script.getScript(ch).getName()
        if name in ("Common", "Inherited", "Unknown"):
            continue
        sid = names.setdefault(name, len(names))
        if sid > 255:
            continue
        table[cp] = sid
    _SCRIPT_NAMES[:] = [n for n, _ in sorted(names.items(), key=lambda kv: kv[1])]
    _MARK_TABLE = marks
    _SCRIPT_TABLE = table


def _tables() -> tuple[np.ndarray, np.ndarray, list[str]]:
    if _SCRIPT_TABLE is None:
        with _TABLE_LOCK:
            if _SCRIPT_TABLE is None:
                _build_tables()
    return _SCRIPT_TABLE, _MARK_TABLE, _SCRIPT_NAMES  # type: ignore[return-value]


@dataclass(frozen=True)
class ScriptProfile:
    dominant: str | None        # script with most letters (None: no letters)
    dominant_frac: float        # its share of all letters
    letters: int                # letters counted (Unicode category L*)
    marks: int                  # combining marks (category M*)
    counts: dict[str, int]      # letters per script

    def share(self, *scripts: str) -> float:
        return sum(self.counts.get(s, 0) for s in scripts) / self.letters if self.letters else 0.0


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def script_profile(text: str) -> ScriptProfile:
    """Letters per Unicode script (vectorised: one table lookup per code point)."""
    table, marks, names = _tables()
    cps = codepoints(text)
    astral = cps > 0xFFFF
    n_han_astral = 0
    if astral.any():
        a = cps[astral]
        n_han_astral = int(((a >= 0x20000) & (a <= 0x3FFFF)).sum())  # CJK extensions B..H
        cps = cps[~astral]
    ids = table[cps]
    counts_arr = np.bincount(ids, minlength=len(names))
    n_marks = int(marks[cps].sum())
    counts = {names[i]: int(c) for i, c in enumerate(counts_arr) if i and c}
    if n_han_astral:
        counts["Han"] = counts.get("Han", 0) + n_han_astral
    letters = sum(counts.values())
    if not letters:
        return ScriptProfile(None, 0.0, 0, n_marks, {})
    dom = max(sorted(counts), key=lambda k: counts[k])
    return ScriptProfile(dom, counts[dom] / letters, letters, n_marks, counts)


def count_marks(text: str) -> int:
    _, marks, _ = _tables()
    cps = codepoints(text)
    cps = cps[cps <= 0xFFFF]
    return int(marks[cps].sum())


# Optional vocalisation marks (Arabic harakat and Quranic annotation signs, Hebrew
# points): written in scripture, poetry and teaching texts, absent elsewhere.
VOCALISATION_RE = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u08d3-\u08ff\u0591-\u05c7]")


def strip_vocalisation(text: str) -> str:
    return VOCALISATION_RE.sub("", text) if not text.isascii() else text


def has_no_space_script(text: str) -> bool:
    return _NO_SPACE_RE.search(text) is not None


# ----------------------------------------------------------------------------- tokens
# spaCy-like tokens for space-delimited scripts: each whitespace-separated chunk
# keeps its core from the first to the last word character whole (``don't``,
# ``x86-64``, ``systemd.special(7``, ``a.b@c.com``), the punctuation before and
# after it becomes one token per character, except runs of dots or dashes
# (``...``, ``--``); URLs stay whole.
# ``regex`` (not ``re``): its ``\w`` includes combining marks, so Devanagari vowel
# signs and Arabic harakat stay inside their word.
_TOKEN_RE = regex.compile(
    r"(?:https?|ftp)://\S+[^\s.,;:!?)\]}'\"]"
    r"|\w(?:\S*\w)?"
    r"|\.{2,}|-{2,}|[^\w\s]"
)
_WORD_CHAR_RE = regex.compile(r"[\p{L}\p{N}\p{M}]")
_WS_RE = re.compile(r"\s+")

_tls = threading.local()


def _word_breaker():
    bi = getattr(_tls, "word_bi", None)
    if bi is None:
        import icu

        bi = icu.BreakIterator.createWordInstance(icu.Locale.getRoot())
        _tls.word_bi = bi
    return bi


def _icu_tokens(text: str) -> list[str]:
    bi = _word_breaker()
    bi.setText(text)
    cps = None
    if max(text) > "\uffff":  # ICU reports UTF-16 offsets: map them to code points
        c = codepoints(text)
        widths = 1 + (c > 0xFFFF).astype(np.int64)
        cps = np.zeros(int(widths.sum()) + 1, dtype=np.int64)
        cps[np.cumsum(widths)] = np.arange(1, len(c) + 1)
        # offsets inside a surrogate pair never occur at boundaries; fill for safety
        np.maximum.accumulate(cps, out=cps)
    out: list[str] = []
    prev = 0
    if cps is None:
        for b in bi:
            tok = text[prev:b]
            prev = b
            if not tok.isspace():
                out.append(tok.strip() if tok[0].isspace() or tok[-1].isspace() else tok)
    else:
        for b in bi:
            e = int(cps[b])
            tok = text[prev:e]
            prev = e
            if tok and not tok.isspace():
                out.append(tok.strip())
    return out


def word_boundaries(text: str) -> set[int]:
    """Offsets (code points) of the word boundaries ICU finds in ``text``: between
    dictionary words in scripts without spaces, around words elsewhere."""
    bi = _word_breaker()
    bi.setText(text)
    out = {0}
    if max(text, default="\0") > "\uffff":  # ICU reports UTF-16 offsets
        c = codepoints(text)
        widths = 1 + (c > 0xFFFF).astype(np.int64)
        cps = np.zeros(int(widths.sum()) + 1, dtype=np.int64)
        cps[np.cumsum(widths)] = np.arange(1, len(c) + 1)
        np.maximum.accumulate(cps, out=cps)
        out.update(int(cps[b]) for b in bi)
    else:
        out.update(bi)
    return out


def tokens(text: str) -> list[str]:
    """Word and punctuation tokens of ``text``, whitespace dropped."""
    if not text:
        return []
    if _NO_SPACE_RE.search(text) is not None:
        return _icu_tokens(text)
    return _TOKEN_RE.findall(text)


# ---- spaCy-like splitting (what datatrove >= 0.3 counts words with) -------------
# Only for like-for-like comparisons (bench/, ``count_punctuation_as_words``).
# Per whitespace chunk, as spaCy's English tokenizer does: split prefix
# punctuation off the front and suffix punctuation off the back one character at
# a time, split contractions ("do" "n't", "ca" "n't", "it" "'s", "can" "not"),
# then split infixes (hyphen/slash/colon/=/<>/~ between letters, "," between
# letters, "." between a lower- and an upper-case letter, +-*^ between digits).
_SP_PUNCT = set("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
_SP_QUOTES = set("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉")
_SP_PREFIX = _SP_PUNCT | _SP_QUOTES | set("§%=—–+$£€¥฿")
_SP_SUFFIX = (_SP_PUNCT | _SP_QUOTES | set("—–%")) - {"."}
_SP_EMOTICONS = frozenset({":)", ":-)", ":(", ":-(", "):", ";)", ":p", ":P", ":D", "8)", ":/", ":|", "=)", "(:", "<3", ":'("})
_SP_INFIX = regex.compile(
    r"(?<=[\p{L}0-9])(?:-|–|—|--|---|——|~)(?=\p{L})"
    r"|(?<=[\p{L}0-9])[:<>=/](?=\p{L})"
    r"|(?<=\p{L}),(?=\p{L})"
    r"|(?<=[\p{Ll}'\"])\.(?=[\p{Lu}'\"])"
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"
    r"|\.\.+|…|\p{So}"
)
_SP_CONTRACTION = regex.compile(r"(?i)^(.+?)(n['’]t|['’](?:s|ll|re|ve|d|m))$")
_SP_SPECIAL = {"can't": ("ca", "n't"), "won't": ("wo", "n't"), "shan't": ("sha", "n't"), "cannot": ("can", "not"),
               "can’t": ("ca", "n’t"), "won’t": ("wo", "n’t"), "ain't": ("ai", "n't")}
_SP_ABBREV = regex.compile(r"^(?:\p{L}\.){2,}$|^\p{L}\.$|^(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|Inc|Ltd|Co|No)\.$")
_SP_DOT_AFTER = regex.compile(r"[0-9\p{Ll}%°'\"”’)\]]$|\p{Lu}\p{Lu}$")
_URL_RE = regex.compile(r"^(?:https?|ftp)://|^www\.")


def _spacy_chunk(chunk: str, out: list[str]) -> None:
    if _URL_RE.match(chunk) or chunk in _SP_EMOTICONS:
        out.append(chunk)
        return
    suffixes: list[str] = []
    while chunk:
        if chunk in _SP_EMOTICONS or _SP_ABBREV.match(chunk):
            break
        if chunk[0] in _SP_PREFIX and len(chunk) > 1:
            out.append(chunk[0])
            chunk = chunk[1:]
            continue
        if chunk.startswith("...") and len(chunk) > 3:
            out.append("...")
            chunk = chunk[3:]
            continue
        last = chunk[-1]
        if len(chunk) > 1 and last in _SP_SUFFIX:
            suffixes.append(last)
            chunk = chunk[:-1]
            continue
        if len(chunk) > 1 and last == "." and not chunk.endswith("..") and _SP_DOT_AFTER.search(chunk[:-1]):
            suffixes.append(".")
            chunk = chunk[:-1]
            continue
        if chunk.endswith("...") and len(chunk) > 3:
            suffixes.append("...")
            chunk = chunk[:-3]
            continue
        break
    if chunk:
        low = chunk.lower()
        if low in _SP_SPECIAL:
            a, b = _SP_SPECIAL[low]
            out += [chunk[: len(a)], chunk[len(a):]]
        else:
            m = _SP_CONTRACTION.match(chunk)
            parts = [m.group(1), m.group(2)] if m and m.group(1)[-1:].isalpha() else [chunk]
            for part in parts:
                pos = 0
                for im in _SP_INFIX.finditer(part):
                    if im.start() > pos:
                        out.append(part[pos:im.start()])
                    out.append(im.group())
                    pos = im.end()
                if pos < len(part):
                    out.append(part[pos:])
    out += reversed(suffixes)


def tokens_spacy_like(text: str) -> list[str]:
    """Like ``tokens`` but splitting space-delimited text the way spaCy's English
    tokenizer does; dictionary segmentation for the scripts without spaces."""
    if not text:
        return []
    if _NO_SPACE_RE.search(text) is not None:
        return _icu_tokens(text)
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalnum() and chunk.lower() != "cannot":
            out.append(chunk)
        else:
            _spacy_chunk(chunk, out)
    return out


def is_word(tok: str) -> bool:
    """A token with at least one letter, digit or mark (not only punctuation/symbols)."""
    return _WORD_CHAR_RE.search(tok) is not None


def words(text: str) -> list[str]:
    return [t for t in tokens(text) if is_word(t)]


def count_words(text: str) -> int:
    """Whitespace words for space-delimited text, dictionary words for the rest."""
    if _NO_SPACE_RE.search(text) is not None:
        return sum(1 for t in _icu_tokens(text) if is_word(t))
    return len(text.split())


# ----------------------------------------------------------------------------- sentences
#: Unicode Sentence_Terminal punctuation commonly used to end sentences, plus the
#: ellipsis; closing quotes/brackets may follow.
TERMINAL_PUNCT = (
    ".!?\u2026\u203c\u203d\u2047\u2048\u2049"   # Latin + ellipsis, ‼ ‽ ⁇ ⁈ ⁉
    "\u3002\uff01\uff1f\uff0e\uff61"            # 。！？．｡
    "\u0964\u0965"                              # । ॥ (Devanagari and most Indic)
    "\u061f\u06d4\u061e"                        # ؟ ۔ (Arabic, Urdu)
    "\u1362\u1367\u1368"                        # ። ፧ ፨ (Ethiopic)
    "\u0589\u055e"                              # ։ ՞ (Armenian)
    "\u104a\u104b"                              # ၊ ။ (Myanmar)
    "\u17d4\u17d5"                              # ។ ៕ (Khmer)
    "\u0f0d\u0f0e"                              # ། ༎ (Tibetan)
    "\u037e"                                    # ; Greek question mark
    "\u0700\u0701\u0702"                        # Syriac
    "\u07f9\u1c7e\u1c7f\ua4ff\ua60e\ua60f\ua6f3\ua6f7"
)
CLOSERS = "\"'”’»」』）)]›"
_TERMINAL_SET = frozenset(TERMINAL_PUNCT)
_SENT_SPLIT_RE = re.compile(
    "[" + re.escape(TERMINAL_PUNCT) + "]+[" + re.escape(CLOSERS) + r"]*(?:\s+|$)"
    "|[\u3002\uff01\uff1f\uff61\u0964\u0965\u061f\u06d4\u1362\u17d4\u104b\u0f0d]+[" + re.escape(CLOSERS) + "]*"
)
_HAS_WORD_RE = re.compile(r"\w")


def ends_with_terminal(line: str, closers: str = CLOSERS) -> bool:
    """True when ``line`` (already stripped) ends with terminal punctuation,
    optionally followed by closing quotes/brackets."""
    s = line.rstrip(closers) if closers else line
    return bool(s) and s[-1] in _TERMINAL_SET


def sentence_count(text: str) -> int:
    """Number of sentences: pieces between terminal punctuation that hold a word."""
    return sum(1 for piece in _SENT_SPLIT_RE.split(text) if _HAS_WORD_RE.search(piece))


_MARK_RE = re.compile(
    "[" + re.escape(TERMINAL_PUNCT) + "]+[" + re.escape(CLOSERS) + r"]*(?=\s|$)"
    "|[\u3002\uff01\uff1f\uff61\u0964\u0965\u061f\u06d4\u1362\u17d4\u104b\u0f0d]"
)


def sentence_mark_count(text: str) -> int:
    """Terminal punctuation that ends a sentence: followed by white space or the
    end of the text (so not the dots of "3.5", "a.b" or a URL), or a full stop of a
    script that writes no space after it (。 । ؟ ...)."""
    return len(_MARK_RE.findall(text))


def split_paragraphs(text: str) -> list[str]:
    return re.split(r"\n{2,}", text.strip())


_LINE_SPLIT_RE = re.compile("\n+")


def split_lines(text: str) -> list[str]:
    return _LINE_SPLIT_RE.split(text)
