"""pipelines/outputs.build_ledger: balance check and per-source stage chains."""
from pipelines.outputs import build_ledger

ORDER = ["read", "normalize", "quality", "exact_dedup", "media", "media_dedup", "near_dup"]

def test_chains_follow_each_sources_kind_and_balance_is_checked():
    c = [(("input", "web", "", ""), 10), (("kept", "web", "", ""), 7),
         (("dropped", "web", "quality", "c4:lorem"), 2), (("dropped", "web", "near_dup", "cluster"), 1),
         (("input", "img", "", ""), 5), (("kept", "img", "", ""), 3), (("dropped", "img", "media_dedup", "phash"), 1),
         (("dropped", "img", "safety", "caption"), 1),
         (("input", "mixed", "", ""), 2), (("kept", "mixed", "", ""), 2)]
    led = build_ledger(c, ORDER, ["media", "media_dedup"], {"web": ["text"], "img": ["media"], "mixed": ["text", "media"]})
    assert led["balanced"] and led["totals"] == {"input": 17, "kept": 12, "dropped": 5}
    web = led["sources"]["web"]["after_stage"]
    assert [s for s, _ in web] == ["read", "normalize", "quality", "exact_dedup", "near_dup"]
    assert web[-1] == ["near_dup", 7]
    img = led["sources"]["img"]["after_stage"]
    assert [s for s, _ in img] == ["read", "media", "media_dedup"]      # safety is not in ORDER: not walked
    assert [s for s, _ in led["sources"]["mixed"]["after_stage"]] == ORDER
    # an unknown source walks every stage; a lost record unbalances the ledger
    bad = build_ledger(c + [(("input", "x", "", ""), 3), (("kept", "x", "", ""), 2)], ORDER)
    assert not bad["balanced"] and bad["problems"] == ["x: input 3 != kept 2 + dropped 0"]
    assert [s for s, _ in bad["sources"]["x"]["after_stage"]] == ORDER
