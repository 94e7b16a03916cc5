"""Unit tests for eval-set decontamination (filters/decontam.py, eval_sets.py, bloom.py)."""
from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.bloom import BloomFilter
from filters.decontam import (
    DecontamConfig,
    Decontaminator,
    EvalSetConfig,
    build_index,
    excise,
    gram_keys,
    load_sets,
    normalized_words,
    raw_tokens,
    token_hashes,
    token_spans,
)
from filters.eval_sets import EvalSetError, detect_layout, load_eval_set
from filters.normalize import dedup_key
from filters.schema import content_hash

DATA = pathlib.Path(__file__).parent / "data" / "decontam"
HUMANEVAL = DATA / "humaneval_sample.jsonl"

FILLER = ("The committee met on a rainy Tuesday to review the budget for the coming year, and after a long "
          "discussion about roads, parks and the library, the members agreed to postpone the vote. ")


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def make(sets: dict[str, str | dict], **kw) -> tuple[Decontaminator, object]:
    """Decontaminator over eval sets given as {name: path} or {name: EvalSetConfig kwargs}."""
    es = [EvalSetConfig(name=n, **({"path": v} if isinstance(v, str) else v)) for n, v in sets.items()]
    cfg = DecontamConfig(eval_sets=es, **kw)
    mode = kw.pop("index", "exact")
    index = build_index(load_sets(cfg), cfg, mode=mode)
    return Decontaminator(index, cfg), index


def doc(text: str, id: str = "d1") -> dict:
    return {"id": id, "text": text, "source": "web", "url": f"https://example.org/{id}",
            "content_hash": content_hash(dedup_key(text)), "scores": {}}


QA = [
    {"id": "q1", "question": "A farmer plants seventeen rows of corn with twelve plants in each row and then "
                             "loses a quarter of them to a storm. How many plants are left standing?",
     "answer": "Seventeen times twelve is 204 plants; a quarter of 204 is 51, so 153 plants are left."},
    {"id": "q2", "question": "Which gas do green plants absorb from the air to build sugars during photosynthesis?",
     "answer": "carbon dioxide"},
    {"id": "q3", "question": "What is the boiling point of water at sea level?", "answer": "100 degrees Celsius"},
]


# ----------------------------------------------------------------------------- normalisation / hashing
def test_text_normalisation_ignores_case_punctuation_and_whitespace():
    a = normalized_words("Janet’s ducks lay 16 eggs   per day.\nShe eats THREE!")
    b = normalized_words("janet's ducks lay 16 eggs per day she eats three")
    assert a == b == ["janet", "s", "ducks", "lay", "16", "eggs", "per", "day", "she", "eats", "three"]


def test_cjk_and_thai_are_tokenised_per_grapheme_and_spans_align():
    text = "学生们在图书馆里安静地读书。Python 3 อยู่ที่นี่"
    toks = raw_tokens(text)
    assert toks[:4] == ["学", "生", "们", "在"] and "Python" in toks and "3" in toks
    assert toks[-4:] == ["อ", "ยู่", "ที่", "นี่"]  # Thai: graphemes (consonant + its marks)
    starts, ends = token_spans(text)
    assert [text[s:e] for s, e in zip(starts, ends)] == toks


def test_code_normalisation_ignores_indentation_keeps_operators_drops_doctest_prompts():
    a = "def f(x, n):\n    if x * n == 2:\n        return True\n    >>> f(1, 2)\n"
    b = "def f(x,n):\n\tif x*n==2:\n\t\treturn True\n f(1, 2)"
    assert normalized_words(a, "code") == normalized_words(b, "code")
    assert "*" in normalized_words(a, "code") and "==" in normalized_words(a, "code")
    assert normalized_words("x - y", "code") == normalized_words("x − y", "code")  # Unicode minus


def test_rolling_gram_keys_equal_keys_of_each_window_hashed_alone():
    toks = normalized_words(FILLER * 2)
    h = token_hashes(toks)
    for n in (3, 8, 13):
        keys = gram_keys(h, n)
        assert len(keys) == len(toks) - n + 1
        for i in (0, 7, len(keys) - 1):
            assert keys[i] == gram_keys(h[i:i + n], n)[0]
    period = len(normalized_words(FILLER))
    keys = gram_keys(h, 13)
    assert keys[0] == keys[period] and len(set(keys[:period].tolist())) == period  # position independent
    assert gram_keys(h[:13], 13)[0] != gram_keys(h[:13], 13, "code")[0]  # family salted
    assert gram_keys(h[:12], 12)[0] != gram_keys(h[:13], 13)[0]


# ----------------------------------------------------------------------------- required cases
def test_chinese_eval_item_embedded_in_chinese_text_is_found(tmp_path):
    item = {"id": "zh-1", "question": "下列关于光合作用的说法中，哪一项是正确的？植物在光照条件下吸收二氧化碳并释放氧气。",
            "answer": "光合作用把光能转化为化学能"}
    path = write_jsonl(tmp_path / "ceval.jsonl", [item])
    op, index = make({"ceval": path})
    assert index.lengths["text"][-1] == 20  # character n-grams for a script without spaces
    host = ("今天上午，老师在教室里给同学们复习了生物课的内容。" + item["question"] +
            "大家认真做了笔记，下课后又去操场上跑步。")
    dec = op.inspect(doc(host))
    assert dec.action == "drop" and dec.reason == "contaminated:ceval"
    assert [it["item"] for it in dec.items] == ["zh-1"] and dec.items[0]["kind"] == "question"
    # The same vocabulary in another order is not contamination.
    clean = "植物需要阳光。老师说光合作用很重要，同学们在操场上跑步，然后回到教室复习生物课的内容和笔记。"
    assert op.inspect(doc(clean)).action is None


def test_humaneval_prompt_reindented_with_different_whitespace_is_found(tmp_path):
    op, index = make({"humaneval": str(HUMANEVAL)})
    assert index.sets[0].family == "code" and index.sets[0].layout == "humaneval"
    prompt = json.loads(HUMANEVAL.read_text().splitlines()[2])["prompt"]  # HumanEval/12
    lines = []
    for line in prompt.splitlines():  # 4-space indents -> tabs, inner spaces doubled, blank lines gone
        depth = (len(line) - len(line.lstrip(" "))) // 4
        if line.strip():
            lines.append("\t" * depth + "  ".join(line.split()))
    reindented = "\n".join(lines)
    assert reindented != prompt and "\t" in reindented
    host = "# utils.py — helpers copied from a forum post\nimport os\n\n" + reindented + "\n    return None\n"
    dec = op.inspect(doc(host))
    assert dec.action == "drop" and dec.sets == ["humaneval"]
    assert [(it["item"], it["kind"]) for it in dec.items] == [("HumanEval/12", "question")]
    # Unrelated code with the same imports is clean.
    assert op.inspect(doc("from typing import List, Optional\n\ndef shortest(xs):\n    return min(xs, key=len)\n")).action is None


# ----------------------------------------------------------------------------- matching rules
def test_modes_verbatim_question_only_reformatted_partial_and_short_items(tmp_path):
    op, index = make({"qa": write_jsonl(tmp_path / "qa.jsonl", QA)})
    q1 = QA[0]
    verbatim = op.inspect(doc(FILLER + q1["question"] + "\n" + q1["answer"] + " " + FILLER))
    assert verbatim.sets == ["qa"] and verbatim.items[0]["kind"] == "question+answer"
    q_only = op.inspect(doc(FILLER + q1["question"] + " " + FILLER))
    assert q_only.items[0]["kind"] == "question"
    reformatted = op.inspect(doc(FILLER + q1["question"].upper().replace(",", "").replace(" ", "  ") + FILLER))
    assert reformatted.items[0]["item"] == "q1"
    partial = op.inspect(doc(FILLER + " ".join(q1["question"].split()[3:19]) + ". " + FILLER))
    assert partial.items[0]["kind"] == "partial" and 0 < partial.items[0]["max_coverage"] < 1
    # q2: a 15-word question alone; q3: 9 words (< n=13, >= min_short_words=8) counts whole
    assert op.inspect(doc(FILLER + QA[1]["question"] + FILLER)).items[0]["item"] == "q2"
    assert op.inspect(doc(FILLER + QA[2]["question"] + FILLER)).items[0]["item"] == "q3"
    # ... but not a part of it shorter than the whole field
    assert op.inspect(doc(FILLER + "What is the boiling point of water? " + FILLER)).action is None
    assert op.inspect(doc(FILLER * 3)).action is None


def test_too_common_and_boilerplate_ngrams_are_ignored_and_listed(tmp_path):
    template = "For which of these two scenarios does the main character do something clearly morally wrong"
    rows = [{"id": f"m{i}", "question": f"{template}? Scenario {i}: I {w} the {v} of my neighbour.",
             "answer": "Wrong, Not wrong"} for i, (w, v) in
            enumerate((("took", "car"), ("fed", "cat"), ("painted", "fence"), ("borrowed", "ladder")))]
    rows.append({"id": "b1", "question": "Answer the following question. In which year did the first crewed "
                                         "moon landing take place according to the history book?", "answer": "1969"})
    op, index = make({"mm": write_jsonl(tmp_path / "mm.jsonl", rows)}, max_ngram_items=3)
    rep = index.report[0]
    assert rep["too_common_count"] > 0
    assert any(template.lower() in t or t in template.lower().replace("?", "") for t, _ in rep["too_common"])
    assert rep["boilerplate_phrases"] == {"answer the following question": 1} and rep["boilerplate_windows"] > 0
    assert op.inspect(doc(FILLER + template + "? " + FILLER)).action is None  # template alone: not a leak
    assert op.inspect(doc(FILLER + rows[2]["question"] + FILLER)).items[0]["item"] == "m2"  # the item is
    assert op.inspect(doc("Answer the following question in the box below, then " + FILLER)).action is None


def test_symbolic_item_with_few_words_is_indexed_with_operators(tmp_path):
    rows = [{"id": "s1", "question": "−4 +  ( −3 )=", "answer": "−7"}, {"id": "s2", "question": "2 + 2", "answer": "4"}]
    op, index = make({"math": write_jsonl(tmp_path / "m.jsonl", rows)})
    assert index.report[0]["items_without_ngrams"] == 1  # "2 + 2 4" is too short to match safely
    assert op.inspect(doc(FILLER + "−4 + (−3) = −7 " + FILLER)).items[0]["item"] == "s1"
    assert op.inspect(doc(FILLER + "-4 + (-3) = -1 " + FILLER)).action is None


# ----------------------------------------------------------------------------- policies
def test_excise_cuts_span_plus_margin_and_keeps_remainder():
    text = "A" * 10 + " " + "x " * 400 + "SECRET ITEM TEXT " + "y " * 400
    s = text.index("SECRET")
    new, info, why = excise(text, [(s, s + 16)], margin=200, min_piece_chars=50, max_pieces=10,
                            min_remaining_chars=100)
    assert why is None and "SECRET" not in new and info["pieces"] == 2
    (a, b), = info["cuts"]
    assert a <= s - 200 and b >= s + 16 + 200 and b - a <= 16 + 400 + 2 * 40  # margin, widened to whitespace
    assert new == text[:a].rstrip() + "\n\n" + text[b:].rstrip()
    # many spans far apart -> too many pieces
    spans = [(i, i + 5) for i in range(600, 6000, 600)]
    long = "word " * 1300
    assert excise(long, spans, margin=10, min_piece_chars=0, max_pieces=5, min_remaining_chars=0)[2] == "too_many_pieces"
    # remainder too short
    assert excise(text, [(0, len(text))], margin=0, min_piece_chars=0, max_pieces=10,
                  min_remaining_chars=1)[2] == "too_short_after_excision"


def test_policies_drop_and_excise_and_clean_docs_untouched(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QA)
    body = FILLER * 4 + QA[0]["question"] + " " + FILLER * 4
    op, _ = make({"qa": {"path": path, "policy": "excise"}})
    d = doc(body)
    dec = op.inspect(d)
    assert dec.action == "excise" and "seventeen rows" not in dec.doc["text"]
    assert dec.doc["content_hash"] == content_hash(dedup_key(dec.doc["text"])) != d["content_hash"]
    assert op.apply(d).modified and op.apply(d).counts["excised_chars"] > len(QA[0]["question"])
    short = doc("Intro. " + QA[0]["question"] + " The end.")
    res = op.inspect(short)
    assert res.action == "drop" and res.reason == "contaminated:qa:too_short_after_excision"
    op_drop, _ = make({"qa": path})
    assert op_drop.apply(d).doc is None and op_drop.apply(d).reason == "contaminated:qa"
    clean = doc(FILLER * 3)
    assert op.apply(clean).doc is clean and not op.apply(clean).modified


def test_two_benchmarks_in_one_document_name_both(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", QA[:1])
    b = write_jsonl(tmp_path / "b.jsonl", QA[1:2])
    op, _ = make({"bench_a": a, "bench_b": {"path": b, "policy": "excise"}})
    dec = op.inspect(doc(FILLER + QA[0]["question"] + FILLER + QA[1]["question"] + FILLER))
    assert dec.action == "drop" and dec.reason == "contaminated:bench_a+bench_b"  # drop wins over excise


# ----------------------------------------------------------------------------- Bloom filter
def test_bloom_filter_no_false_negatives_low_fp_and_roundtrip():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 2**63, size=20_000, dtype=np.uint64)
    bf = BloomFilter.for_capacity(len(keys), 1e-4)
    bf.add(keys)
    assert bf.contains(keys).all()
    other = rng.integers(0, 2**63, size=200_000, dtype=np.uint64)
    fp = bf.contains(other).mean()
    assert fp < 5e-4 and abs(bf.expected_fp_rate() - 1e-4) < 5e-5
    assert BloomFilter.from_bytes(bf.to_bytes()) == bf
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(bf.to_bytes()[:-1])


def test_bloom_index_makes_the_same_decisions_as_exact(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QA)
    he = str(HUMANEVAL)
    exact, ei = make({"qa": path, "humaneval": he})
    bloom, bi = make({"qa": path, "humaneval": he}, index="bloom")
    assert bi.mode == "bloom" and bi.nbytes < ei.nbytes
    prompt = json.loads(HUMANEVAL.read_text().splitlines()[0])["prompt"]
    docs = [doc(FILLER + QA[0]["question"] + FILLER, "a"), doc(FILLER * 2, "b"), doc(prompt, "c"),
            doc(FILLER + QA[2]["question"], "d")]
    for d in docs:
        e, b = exact.inspect(d), bloom.inspect(d)
        assert (e.action, e.reason, e.windows) == (b.action, b.reason, b.windows)
    assert bloom.inspect(docs[0]).set_keys["qa"] and not bloom.inspect(docs[0]).items


# ----------------------------------------------------------------------------- loaders
LAYOUT_CASES = {
    "mmlu": ({"question": "Q mmlu?", "subject": "x", "choices": ["a1", "a2", "a3", "a4"], "answer": 2},
             {"question": "Q mmlu?", "answer": "a3"}),
    "gsm8k": ({"question": "Q gsm?", "answer": "work\n#### 5"}, {"answer": "work\n#### 5"}),
    "humaneval": ({"task_id": "HumanEval/9", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                   "test": "", "entry_point": "f"}, {"id": "HumanEval/9", "question": "def f():\n", "code": "    return 1\n"}),
    "mbpp": ({"task_id": 11, "text": "Write a function.", "code": "def g(): pass", "test_list": []},
             {"id": "11", "question": "Write a function.", "code": "def g(): pass"}),
    "hellaswag": ({"ind": 4, "activity_label": "Cooking", "ctx": "[header] Boil water. [title] Add salt.",
                   "endings": ["e0", "e1", "e2", "e3"], "label": "1"}, {"question": "Boil water. Add salt.", "answer": "e1"}),
    "arc": ({"id": "Mercury_1", "question": {"stem": "Q arc?", "choices": [{"text": "t1", "label": "A"},
                                                                          {"text": "t2", "label": "B"}]},
             "answerKey": "B"}, {"id": "Mercury_1", "question": "Q arc?", "answer": "t2"}),
    "piqa": ({"goal": "Open a jar", "sol1": "twist lid", "sol2": "hit jar", "label": 0}, {"answer": "twist lid"}),
    "boolq": ({"question": "is it so", "passage": "P text", "answer": True}, {"passage": "P text", "answer": "yes"}),
    "winogrande": ({"qID": "w1", "sentence": "The cup fell because _ was heavy.", "option1": "it",
                    "option2": "the table", "answer": "1"}, {"question": "The cup fell because it was heavy."}),
    "triviaqa": ({"question_id": "tq1", "question": "Q tq?", "answer": {"value": "Paris", "aliases": ["Paris"]}},
                 {"id": "tq1", "answer": "Paris"}),
    "nq_open": ({"question": "Q nq?", "answer": ["A1", "A2"]}, {"answer": "A1"}),
    "squad": ({"id": "s1", "title": "T", "context": "C text", "question": "Q sq?",
               "answers": {"text": ["ans"], "answer_start": [0]}}, {"passage": "C text", "answer": "ans"}),
    "math": ({"problem": "Compute 1+1.", "solution": "It is $2$.", "level": "Level 1", "type": "Algebra"},
             {"question": "Compute 1+1.", "answer": "It is $2$."}),
    "drop": ({"section_id": "s", "query_id": "d1", "passage": "P drop", "question": "Q drop?",
              "answers_spans": {"spans": ["7"], "types": ["number"]}}, {"id": "d1", "passage": "P drop", "answer": "7"}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_CASES))
def test_layouts_are_detected_and_mapped(tmp_path, layout):
    rec, want = LAYOUT_CASES[layout]
    assert detect_layout(rec) == layout
    items, info = load_eval_set(EvalSetConfig(name="x", path=write_jsonl(tmp_path / "x.jsonl", [rec])))
    assert info["layout"] == layout
    for k, v in want.items():
        assert getattr(items[0], k) == v, (layout, k)


def test_parquet_csv_headerless_mmlu_and_nested_json(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"question": "Q1?", "answer": "A1\n#### 1"}]), tmp_path / "g.parquet")
    items, info = load_eval_set(EvalSetConfig(name="g", path=str(tmp_path / "g.parquet")))
    assert info["layout"] == "gsm8k" and items[0].id == "g/0"
    sub = tmp_path / "mmlu" / "test"
    sub.mkdir(parents=True)
    for subject in ("anatomy", "virology"):
        with open(sub / f"{subject}_test.csv", "w", newline="") as f:
            csv.writer(f).writerows([[f"{subject} q?", "w", "x", "y", "z", "C"], ["second?", "1", "2", "3", "4", "A"]])
    items, info = load_eval_set(EvalSetConfig(name="mmlu", path=str(tmp_path / "mmlu")))
    assert info["layout"] == "mmlu" and info["n_files"] == 2 and len(items) == 4
    assert (items[0].question, items[0].answer, items[0].id) == ("anatomy q?", "y", "mmlu/test/anatomy_test.csv#0")
    squad = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "ctx", "qas": [
        {"id": "a", "question": "qa?", "answers": [{"text": "x", "answer_start": 0}]},
        {"id": "b", "question": "qb?", "answers": [{"text": "y", "answer_start": 1}]}]}]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    items, info = load_eval_set(EvalSetConfig(name="squad", path=str(tmp_path / "squad.json")))
    assert info["layout"] == "squad" and [i.id for i in items] == ["a", "b"] and items[1].passage == "ctx"
    drop = {"nfl_1": {"passage": "pp", "qa_pairs": [{"question": "how many?", "query_id": "q9",
                                                     "answer": {"number": "3", "spans": []}}]}}
    (tmp_path / "drop.json").write_text(json.dumps(drop))
    items, info = load_eval_set(EvalSetConfig(name="drop", path=str(tmp_path / "drop.json")))
    assert info["layout"] == "drop" and (items[0].id, items[0].answer) == ("q9", "3")


def test_explicit_columns_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"uid": "u1", "instruction": "Translate this.", "target": "Done."}])
    items, info = load_eval_set(EvalSetConfig(name="c", path=path, columns={"id": "uid", "question": "instruction",
                                                                             "answer": "target"}, fields=["question"]))
    assert (items[0].id, items[0].question, items[0].answer, info["fields"]) == ("u1", "Translate this.", "Done.", ["question"])


def test_missing_or_bad_eval_sets_are_clear_errors(tmp_path):
    with pytest.raises(EvalSetError, match=r"eval set 'gone': .*not found.*nothing is downloaded"):
        load_eval_set(EvalSetConfig(name="gone", path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "bad.jsonl").write_text('{"question": "ok"}\n{not json\n')
    with pytest.raises(EvalSetError, match=r"bad.jsonl: line 2: not valid JSON"):
        load_eval_set(EvalSetConfig(name="bad", path=str(tmp_path / "bad.jsonl")))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EvalSetError, match="no records"):
        load_eval_set(EvalSetConfig(name="empty", path=str(tmp_path / "empty.jsonl")))
    with pytest.raises(EvalSetError, match="not prepared"):
        load_eval_set(EvalSetConfig(name="t", tfds="mnist", tfds_data_dir=str(tmp_path / "tfds")))
    with pytest.raises(ValueError, match="exactly one of path or tfds"):
        EvalSetConfig(name="x")
    with pytest.raises(ValueError, match="unknown canonical field"):
        EvalSetConfig(name="x", path="p", columns={"prompt": "q"})
    with pytest.raises(ValueError, match="more than once"):
        DecontamConfig(eval_sets=[EvalSetConfig(name="a", path="p"), EvalSetConfig(name="a", path="q")])


def test_tfds_dataset_prepared_locally_is_loaded(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyEvalForDecontam(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"question": tfds.features.Text(), "answer": tfds.features.Text(), "id": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for i, q in enumerate(QA):
                yield i, {"question": q["question"], "answer": q["answer"], "id": q["id"]}

    data_dir = str(tmp_path / "tfds")
    TinyEvalForDecontam(data_dir=data_dir, file_format="array_record").download_and_prepare()
    items, info = load_eval_set(EvalSetConfig(name="tiny", tfds="tiny_eval_for_decontam", tfds_data_dir=data_dir))
    assert sorted(i.id for i in items) == ["q1", "q2", "q3"]
    assert {i.id: i.answer for i in items}["q2"] == "carbon dioxide"
