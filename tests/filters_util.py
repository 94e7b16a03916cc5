"""Helpers shared by the tests of the language/quality/safety filters."""
from __future__ import annotations

from filters.schema import new_text_record

EN = ("The quick brown fox jumps over the lazy dog while the farmer watches with interest. "
      "It is a sunny day and the animals have been playing in the field since the morning. "
      "After lunch the children walk to the river to look for fish and to talk about the weather. ")
ZH = "今天天气很好，我们去公园散步。公园里有很多人在跑步和打太极拳。孩子们在草地上玩耍，老人们坐在长椅上聊天。"
JA = "今日はとても良い天気です。私たちは公園に散歩に行きました。公園ではたくさんの人が走っていました。"
AR = "ذهب الطلاب إلى المكتبة في الصباح لقراءة الكتب الجديدة. كانت المكتبة مليئة بالناس الذين يدرسون بهدوء."
RU = "Сегодня хорошая погода, и мы пошли гулять в парк. В парке было много людей, которые бегали и играли."
HI = "आज मौसम बहुत अच्छा है और हम पार्क में घूमने गए। पार्क में बहुत सारे लोग दौड़ रहे थे और खेल रहे थे।"
TH = "วันนี้อากาศดีมาก เราไปเดินเล่นที่สวนสาธารณะ ในสวนมีคนจำนวนมากกำลังวิ่งออกกำลังกาย"
EMOJI = "😀🎉🔥👍🏽 🚀✨ 😀😀"

EDGE_TEXTS = {
    "empty": "",
    "whitespace": "  \n\t \n  ",
    "emoji_only": EMOJI,
    "mixed_scripts": EN + ZH + AR + RU + HI + TH + EMOJI,
    "rtl": "\u202b" + AR * 3 + "\u202c",
}


def doc(text: str, *, lang: str | None = None, script: str | None = None, source: str = "test",
        url: str | None = None, id: str = "d1") -> dict:
    d = new_text_record(text, source, id=id, url=url)
    d["lang"] = lang
    d["script"] = script
    return d


def big_text(mb: int = 10) -> str:
    """~``mb`` MB of varied multilingual prose (repetition-free at the paragraph level)."""
    parts, n, i = [], 0, 0
    base = [EN, ZH, RU, AR]
    while n < mb * 1_000_000:
        p = f"Paragraph {i}. " + base[i % 4] + f" Number {i * 7919 % 100003}.\n\n"
        parts.append(p)
        n += len(p.encode())
        i += 1
    return "".join(parts)
