"""A synthetic news stream for the benchmarks: events, rewrites, wire copies, explicit time spread.

Imported by path from the other scripts in ``benchmarks/`` (it is not part of the
package). Deterministic for a given seed; no third-party library.

What a stream looks like
------------------------
* A vocabulary of ``VOCABULARY`` pronounceable pseudo-words with Zipf frequencies
  (exponent 1.05), so IDF, LSH collisions and term-set sizes behave like English text.
* **Topics**: 10 topics of 60 words; an event takes 12 words of its topic, and 30 % of
  the words of every article come from its topic. This makes unrelated reports of one
  topic share words as real news does: LSH candidates per query at 5,000 headline+summary
  articles are 75 (gnews_dev, 23 distinct terms per article: 80), at 2,400 headlines 37
  (uci_dev: 39).
* **Events**: each has 24 keywords (8 own, 12 of its topic, three capitalised names, one
  number).
  A new event starts with probability ``p_new`` per article (default 0.35); otherwise
  the article reports one of the events started in the last ``event_hours`` (24 h),
  chosen with weight ~ 1/rank (a few big stories, many small ones).
* **Same-event rewrites**: a new text drawn from the event's keywords (about 1 word in 5)
  and the general vocabulary.
* **Wire copies**: with probability ``p_copy`` (0.15) an article of an event is the exact
  text of an earlier article of that event, published by another outlet.
* **Lengths**: ``"headline"`` entries are a 6-12 word title and a 15-30 word one-sentence
  summary; ``"full"`` entries add a 600-word body (+-20 %); ``"mixed"`` (the scale
  default) is 70 % headline-length, 30 % full text.
* **Time**: articles are spread evenly over ``days`` days (default 28) in arrival order,
  so a 72-hour clustering window holds ``n * 72 / (24 * days)`` of them.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

VOCABULARY = 30_000
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_ONSETS = [
    "b",
    "br",
    "c",
    "ch",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "sh",
    "th",
    "pl",
    "cl",
    "fl",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
_CODAS = ["", "n", "r", "l", "s", "t", "m", "nd", "rt", "st"]
# The most frequent ranks are real function words, as in English text (about 40 % of tokens).
_FUNCTION = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "that",
    "is",
    "was",
    "for",
    "on",
    "it",
    "with",
    "as",
    "he",
    "be",
    "at",
    "by",
    "his",
    "from",
    "they",
    "this",
    "had",
    "have",
    "are",
    "but",
    "not",
    "were",
    "which",
    "or",
    "we",
    "an",
    "their",
    "has",
    "been",
    "one",
    "more",
    "said",
    "its",
    "who",
    "would",
    "will",
    "after",
    "all",
    "there",
    "also",
    "when",
    "can",
    "into",
    "about",
    "over",
    "than",
    "other",
    "two",
    "three",
    "new",
    "says",
]


def _make_words(count: int, rng: random.Random) -> list[str]:
    out: list[str] = list(_FUNCTION)
    seen: set[str] = set(out)
    while len(out) < count:
        syllables = rng.choice((1, 2, 2, 2, 3, 3, 4))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if word not in seen and len(word) > 2:
            seen.add(word)
            out.append(word)
    return out


@dataclass(frozen=True)
class Item:
    """One synthetic article."""

    index: int  # position in the stream
    event: int  # gold story
    outlet: int
    title: str
    summary: str
    body: str  # "" for headline-length entries
    published: datetime
    copy_of: int | None  # index of the article this one copies

    @property
    def text(self) -> str:
        return self.body or self.summary


class Stream:
    """``Stream(seed).items(n)`` yields ``n`` articles in arrival order."""

    def __init__(
        self,
        seed: int = 1,
        *,
        length: str = "headline",
        days: float = 28.0,
        outlets: int = 50,
        p_new: float = 0.35,
        p_copy: float = 0.15,
        event_hours: float = 24.0,
        topics: int = 10,
        topic_words: int = 12,
        topic_share: float = 0.3,
    ) -> None:
        if length not in ("headline", "full", "mixed"):
            raise ValueError(f"length must be headline, full or mixed, not {length!r}")
        self.rng = random.Random(seed)
        self.length = length
        self.days = days
        self.outlets = outlets
        self.p_new = p_new
        self.p_copy = p_copy
        self.event_seconds = event_hours * 3600.0
        self.words = _make_words(VOCABULARY, self.rng)
        # Topics (politics, markets, sport...): events of one topic share part of their
        # vocabulary, so unrelated reports collide in the LSH index as real news does.
        self.topic_words = topic_words
        self.topic_share = topic_share
        self._topic_of: dict[int, list[str]] = {}  # id(event keywords) -> its topic's words
        self.topics = [self.rng.sample(self.words[100:3000], 60) for _ in range(topics)]
        weights = [1.0 / (rank + 1) ** 1.05 for rank in range(VOCABULARY)]
        self.cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self.cum.append(total)

    # ------------------------------------------------------------------ text

    def _general(self, k: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=k)

    def _sentence(self, keywords: list[str], k: int, share: float = 0.2) -> str:
        rng = self.rng
        words = self._general(k)
        topic = self._topic_of.get(id(keywords), ())
        for i in range(k):
            x = rng.random()
            if x < share:
                words[i] = rng.choice(keywords)
            elif topic and x < share + self.topic_share:
                words[i] = rng.choice(topic)
        words[0] = words[0][:1].upper() + words[0][1:]
        return " ".join(words) + "."

    def _event(self, event_id: int) -> list[str]:
        rng = self.rng
        topic = self.topics[rng.randrange(len(self.topics))]
        own = rng.sample(self.words[2000:], 8) + rng.sample(topic, self.topic_words)
        names = [w.capitalize() for w in rng.sample(self.words[500:], 3)]
        keywords = own + names + [str(rng.randint(2, 9999))]
        self._topic_of[id(keywords)] = topic
        return keywords

    def _article(self, keywords: list[str], full: bool) -> tuple[str, str, str]:
        rng = self.rng
        title_words = rng.sample(keywords, 4) + self._general(rng.randint(2, 8))
        rng.shuffle(title_words)
        title = " ".join(title_words)
        title = title[:1].upper() + title[1:]
        summary = self._sentence(keywords, rng.randint(15, 30), 0.3)
        body = ""
        if full:
            target = int(600 * rng.uniform(0.8, 1.2))
            sentences = [summary]
            count = len(summary.split())
            while count < target:
                n = rng.randint(8, 25)
                sentences.append(self._sentence(keywords, n))
                count += n
            paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
            body = "\n".join(paragraphs)
        return title, summary, body

    # ------------------------------------------------------------------ stream

    def items(self, n: int) -> Iterator[Item]:
        rng = self.rng
        span = self.days * 86400.0
        step = span / max(n, 1)
        active: list[tuple[float, int, list[str], list[int]]] = []  # (start, event, keywords, members)
        starts: list[float] = []
        events = 0
        texts: dict[int, tuple[str, str, str]] = {}  # index -> text, for copies (pruned with events)
        for index in range(n):
            t = index * step
            # events older than event_hours no longer get articles
            cut = bisect.bisect_left(starts, t - self.event_seconds)
            if cut:
                for _, _, keywords, members in active[:cut]:
                    self._topic_of.pop(id(keywords), None)
                    for m in members:
                        texts.pop(m, None)
                del active[:cut]
                del starts[:cut]
            if not active or rng.random() < self.p_new:
                events += 1
                active.append((t, events, self._event(events), []))
                starts.append(t)
                slot = len(active) - 1
            else:  # recent and big events get more: weight 1/rank, newest first
                ranks = len(active)
                slot = ranks - 1 - min(int(rng.paretovariate(1.0)) - 1, ranks - 1)
            _, event, keywords, members = active[slot]
            full = self.length == "full" or (self.length == "mixed" and rng.random() < 0.3)
            copy_of = None
            if members and rng.random() < self.p_copy:
                copy_of = rng.choice(members)
                title, summary, body = texts[copy_of]
            else:
                title, summary, body = self._article(keywords, full)
            members.append(index)
            texts[index] = (title, summary, body)
            yield Item(
                index=index,
                event=event,
                outlet=rng.randrange(self.outlets),
                title=title,
                summary=summary,
                body=body,
                published=EPOCH + timedelta(seconds=t),
                copy_of=copy_of,
            )


# --------------------------------------------------------------------------- feed documents


def rss_document(items: list[Item], *, outlet: str, base: str = "https://news.example") -> bytes:
    """An RSS 2.0 document of ``items`` (full-text entries carry ``content:encoded``)."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>{escape(outlet)}</title><link>{base}/{outlet}/</link>"
        f"<description>Synthetic outlet {escape(outlet)}</description>"
    ]
    for item in items:
        parts.append(
            f"<item><title>{escape(item.title)}</title>"
            f"<link>{base}/{outlet}/{item.index}</link>"
            f'<guid isPermaLink="false">{outlet}-{item.index}</guid>'
            f"<pubDate>{format_datetime(item.published)}</pubDate>"
            f"<description>{escape(item.summary)}</description>"
        )
        if item.body:
            html = "".join(f"<p>{escape(p)}</p>" for p in item.body.split("\n"))
            parts.append(f"<content:encoded><![CDATA[{html}]]></content:encoded>")
        parts.append("</item>")
    parts.append("</channel></rss>\n")
    return "".join(parts).encode("utf-8")


def feed_documents(
    n: int, *, length: str = "headline", per_feed: int = 100, seed: int = 1
) -> list[tuple[str, bytes]]:
    """``n`` articles as ``(name, RSS bytes)`` documents of ``per_feed`` entries each."""
    items = list(Stream(seed, length=length, days=max(n / 20_000, 0.05)).items(n))
    docs = []
    for number, start in enumerate(range(0, n, per_feed)):
        name = f"outlet{number:04d}"
        docs.append((name, rss_document(items[start : start + per_feed], outlet=name)))
    return docs


if __name__ == "__main__":  # a look at the stream
    for item in Stream(1, length="mixed").items(8):
        print(
            item.index,
            item.event,
            item.copy_of,
            item.published.isoformat(),
            item.title,
            "|",
            item.summary[:80],
            "| body words:",
            len(item.body.split()),
        )
