import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.base import run_filter
from filters.classifier import ClassifierError, _metrics, load_examples, train_in_subprocess
from filters.quality import ClassifierConfig, QualityClassifier
from filters.safety import ToxicityClassifier, ToxicityConfig
from tests.filters_util import EDGE_TEXTS, doc

CLEAN = ("the weather today is {a} and the children are playing in the {b} near the {c} while their parents "
         "talk about the {d} and the plans for the weekend")
TOXIC = "you are a {x} {y} and everyone knows you are {z} so shut up you {x}"
A = ["sunny", "cold", "warm", "windy", "grey", "bright"]
B = ["park", "garden", "yard", "field", "square", "street"]
INSULT = ["idiot", "moron", "loser", "imbecile", "clown", "fool", "jerk", "dimwit"]


def _write(path, texts, parquet=False):
    if parquet:
        pq.write_table(pa.table({"text": texts}), path)
    else:
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


@pytest.fixture(scope="module")
def toxicity_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tox")
    rnd = random.Random(0)
    clean = [CLEAN.format(a=rnd.choice(A), b=rnd.choice(B), c=rnd.choice(B), d=rnd.choice(A)) + f" {i}"
             for i in range(300)]
    toxic = [TOXIC.format(x=rnd.choice(INSULT), y=rnd.choice(INSULT), z=rnd.choice(INSULT)) + f" {i}"
             for i in range(300)]
    _write(d / "toxic.parquet", toxic, parquet=True)   # Parquet and JSONL both read
    _write(d / "clean.jsonl", clean)
    model = str(d / "tox.bin")
    report = train_in_subprocess("filters.safety", str(d / "toxic.parquet"), str(d / "clean.jsonl"), model,
                                 ["--epoch", "20", "--lr", "1.0", "--dim", "16"])
    return model, report


def test_toxicity_train_cli_reports_and_scores(toxicity_model):
    model, report = toxicity_model
    v = report["validation"]
    assert v["precision"] >= 0.9 and v["recall"] >= 0.9, v
    tox = ToxicityClassifier(ToxicityConfig(model=model, max_score=0.5))
    bad = run_filter(tox, doc("you are an idiot and a moron so shut up you loser"))
    good = run_filter(tox, doc("the weather today is warm and the children are playing in the park"))
    assert bad.reason == "toxicity:score" and bad.doc["scores"]["toxicity.score"] > 0.5
    assert good.reason is None and good.doc["scores"]["toxicity.score"] < 0.5
    for text in EDGE_TEXTS.values():
        assert 0.0 <= run_filter(tox, doc(text)).doc["scores"]["toxicity.score"] <= 1.0


def test_train_cli_errors_are_one_line(tmp_path):
    _write(tmp_path / "few.jsonl", ["a", "b"])
    with pytest.raises(ClassifierError, match="at least 10"):
        train_in_subprocess("filters.quality", str(tmp_path / "few.jsonl"), str(tmp_path / "few.jsonl"),
                            str(tmp_path / "m.bin"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ClassifierError, match="not valid JSON"):
        load_examples(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ClassifierError, match="no such file"):
        load_examples(str(tmp_path / "missing.jsonl"))


def test_metrics():
    m = _metrics([0.9, 0.8, 0.2, 0.1], [1, 0, 1, 0])
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["auc"] == 0.75


class _Stub:
    def prob(self, text):
        return 0.9 if "good" in text else 0.1


def test_quality_classifier_threshold_and_code():
    q = QualityClassifier(ClassifierConfig(model="x", min_score=0.5), scorer=_Stub())
    assert run_filter(q, doc("a good text", lang="en")).reason is None
    out = run_filter(q, doc("a bad text", lang="en"))
    assert out.reason == "quality_model:score" and out.score == pytest.approx(0.1)
    assert run_filter(q, doc("def f(): pass", lang="code:python")).doc["scores"] == {}
    with pytest.raises(ValueError, match="need a model"):
        ClassifierConfig(min_score=0.5)
