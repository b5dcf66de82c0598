"""Text features for clustering: tokens, terms, names, numbers, and the pure scores on them.

Everything here is a pure function of its arguments (no state, no clock, no third-party
library); the clusterer calls :func:`extract` once per article and only works on its result.

What an article becomes
-----------------------
* **terms**: content words, lower-cased, unicode-folded (NFKC, accents kept on letters
  but curly quotes and dashes folded), possessives dropped (``Putin's`` -> ``putin``),
  stop-words removed, lightly stemmed (plural and a few verb endings: the same
  conservative stemmer is applied to every input, so already-stemmed corpora stay
  almost unchanged). Numbers are terms too (``7.0``, ``1,000`` -> ``1000``).
* **title terms** and **body terms** separately: titles weigh more than bodies.
* **names**: terms that were capitalised in running text (not first in a sentence,
  not in an all-caps or title-cased line). Lower-cased input has none, which is fine:
  the signal is then simply absent.
* **numbers**: terms containing a digit (counts, scores, magnitudes, years).
* **shingles**: the set of terms (title and body) fed to the MinHash sketch. Content
  words, not word n-grams: n-gram shingles find copies but miss rewrites of the same
  event (measured 0.06-0.31 B-cubed F1 alone).
* **fingerprint**: a hash of the full normalised word sequence, to catch exact copies
  without any similarity computation.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import filterfalse

import xxhash

# A deliberately small English stop list: function words only. Frequent *content*
# words ("says", "new") are left to IDF, which adapts to the stream.
STOPWORDS: frozenset[str] = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "aren",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "couldn",
        "did",
        "didn",
        "do",
        "does",
        "doesn",
        "doing",
        "don",
        "down",
        "during",
        "each",
        "either",
        "few",
        "for",
        "from",
        "further",
        "had",
        "hadn",
        "has",
        "hasn",
        "have",
        "haven",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "however",
        "i",
        "if",
        "in",
        "into",
        "is",
        "isn",
        "it",
        "its",
        "itself",
        "just",
        "let",
        "ll",
        "me",
        "more",
        "most",
        "much",
        "must",
        "mustn",
        "my",
        "myself",
        "neither",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "ought",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "per",
        "same",
        "shall",
        "shan",
        "she",
        "should",
        "shouldn",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "thus",
        "to",
        "too",
        "under",
        "until",
        "up",
        "upon",
        "us",
        "very",
        "was",
        "wasn",
        "we",
        "were",
        "weren",
        "what",
        "when",
        "where",
        "whether",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "within",
        "without",
        "won",
        "would",
        "wouldn",
        "yet",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "re",
        "ve",
        "d",
        "s",
        "t",
        "m",
        "o",
        "y",
        "via",
        "vs",
        "amp",
        "nbsp",
        "quot",
        "said",
        "says",
        "say",
        "told",
    ]
)

# Words that are capitalised for reasons other than being names.
_NOT_NAMES: frozenset[str] = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "mr",
        "mrs",
        "ms",
        "dr",
        "sir",
        "update",
        "updated",
        "breaking",
        "news",
        "video",
        "photos",
        "photo",
        "watch",
        "live",
        "read",
        "exclusive",
        "opinion",
        "analysis",
    ]
)

_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201b": "'",
        "\u2032": "'",
        "`": "'",
        "\u00b4": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u200b": "",
    }
)

# A word: letters/digits, with inner apostrophes, and numbers with inner , or . (1,000 / 7.0).
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+(?:'[^\W_]+)*")
_BREAK = re.compile(r"[.!?:;\"|()\[\]]")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """A light, conservative English suffix stripper.

    It only conflates forms that nearly always mean the same thing in news text:
    plurals, third person, ``-ing`` and ``-ed``. Words of four letters or less and
    numbers are left alone.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    w = word
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses") or w.endswith("es") and len(w) > 4 and w[-3] in "sxz" and w[-4] not in "aeiou":
        w = w[:-2]
    elif w.endswith("s") and len(w) > 4 and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ing") and len(w) > 5:
        w = w[:-3]
        if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":
            w = w[:-1]
    elif w.endswith("ed") and len(w) > 4 and not w.endswith("eed"):
        w = w[:-2]
        if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":
            w = w[:-1]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if w.endswith("y") and len(w) > 3:
        w = w[:-1] + "i"
    return w


def normalise(text: str) -> str:
    """NFKC, folded quotes/dashes; case is kept (names are read from it)."""
    if text.isascii():
        # NFKC leaves ASCII as it is, and the only ASCII character folded is the backtick
        # (str.isascii is O(1): a flag of the string)
        return text.replace("`", "'")
    return unicodedata.normalize("NFKC", text).translate(_FOLD)


def _norm_word(raw: str) -> str:
    w = raw.lower()
    if "'" in w:
        head, _, tail = w.partition("'")
        # possessives and contractions: keep the head ("putin's" -> "putin", "don't" -> "don")
        w = head if tail in {"s", "t", "ll", "re", "ve", "d", "m"} or len(tail) <= 2 else head + tail
    if w[0].isdigit():
        w = w.replace(",", "")
        if "." in w:
            w = w.rstrip("0").rstrip(".") if re.fullmatch(r"\d+\.\d+", w) else w.replace(".", "")
    return w


def words(text: str) -> list[str]:
    """Every normalised word of ``text`` in order, stop-words included (for fingerprints)."""
    return [_norm_word(m.group()) for m in _WORD.finditer(normalise(text))]


def _is_title_case_line(raw_words: list[str]) -> bool:
    """A headline set in Title Case or ALL CAPS: capitals there say nothing about names.

    (The plain form of the rule: :func:`analyse` counts the same words with the weights
    its lexicon keeps for each raw word.)"""
    long_words = [w for w in raw_words if len(w) > 3 and w[0].isalpha()]
    if len(long_words) < 2:
        return False
    caps = sum(1 for w in long_words if w[0].isupper())
    return caps >= 0.7 * len(long_words)


# A raw word's weight in the Title Case test, so that one ``sum`` counts a line's words:
# _LONG for a word _is_title_case_line counts (more than three characters, starting with a
# letter), plus 1 if it is capitalised; 0 for the others. (A line has far fewer than 2**32
# words, and the sum of small ints stays in C.)
_LONG = 1 << 32


class _Lexicon(dict[str, tuple[str, str | None, int, str | None]]):
    """raw word -> (normalised word, its term or None for a stop-word, its Title Case
    weight, the term it names if written where a name can be (capitalised, not a stop-word
    nor in _NOT_NAMES) or None), filled on demand.

    All four are pure functions of the raw word, and a news stream repeats its words: the
    lookup replaces the Python calls per word (normalising, stemming, reading the capitals).
    Cleared when it reaches ``size`` words (a plain bound: results never depend on it)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __missing__(self, raw: str) -> tuple[str, str | None, int, str | None]:
        if len(self) >= self._size:
            self.clear()
        w = _norm_word(raw)
        term = None if w in STOPWORDS or (len(w) == 1 and not w.isdigit()) else stem(w)
        capital = raw[0].isupper()
        weight = _LONG + capital if len(raw) > 3 and raw[0].isalpha() else 0
        name = term if capital and w not in _NOT_NAMES else None
        entry = self[raw] = (w, term, weight, name)
        return entry


_LEXICON = _Lexicon(200_000)


# a word (group 1) or a sentence break (group 1 empty): words and breaks share no character,
# so the words found are exactly _WORD's
_TOKEN = re.compile(f"({_WORD.pattern})|{_BREAK.pattern}")
# The same two patterns for an ASCII line, where they match exactly the same: there
# [^\W_] (str.isalnum) is [A-Za-z0-9] and \d (str.isdecimal) is [0-9]. Faster: a character
# set is a bitmap test where a Unicode category is a table lookup per character.
_WORD_ASCII = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*")
_TOKEN_ASCII = re.compile(f"({_WORD_ASCII.pattern})|{_BREAK.pattern}")


# what _split_form translates a break character and a digit to (other control characters
# become spaces, so these two bytes come from nothing else)
_SPLIT_BREAK = 1
_SPLIT_DIGIT = 2


def _ascii_table(breaks: bool) -> bytes:
    """bytes.translate table for :func:`_split_form`: letters and ``'`` kept, digits to
    _SPLIT_DIGIT, break characters to _SPLIT_BREAK (``breaks``) or a space, every other
    ASCII character to a space."""
    table = bytearray(range(256))
    for c in range(128):
        ch = chr(c)
        if not (ch.isalpha() or ch == "'"):
            table[c] = _SPLIT_DIGIT if ch.isdigit() else _SPLIT_BREAK if breaks and _BREAK.match(ch) else 32
    return bytes(table)


_ASCII_TOKENS = _ascii_table(breaks=True)
_ASCII_WORDS = _ascii_table(breaks=False)


def _digit_context_table() -> bytes:
    """bytes.translate table for :func:`_split_form`'s digit test: digits to ``0``, letters
    and ``'`` to ``a``, ``.`` and ``,`` to ``.``, everything else to a space."""
    table = bytearray(b" " * 256)
    for c in range(128):
        ch = chr(c)
        if ch.isdigit():
            table[c] = ord("0")
        elif ch.isalpha() or ch == "'":
            table[c] = ord("a")
        elif ch in ".,":
            table[c] = ord(".")
    return bytes(table)


_DIGIT_CONTEXT = _digit_context_table()
_DIGITS = bytes(range(ord("0"), ord("9") + 1))
# _split_form's two tables with the digits kept as they are (made once, not per line)
_DIGITS_KEPT = {table: table[:48] + _DIGITS + table[58:] for table in (_ASCII_TOKENS, _ASCII_WORDS)}


def _split_form(line: str, table: bytes) -> str | None:
    """An ASCII line without ``''`` and without numbers the regex reads otherwise than
    ``split`` would (most lines of news text) rewritten so that ``split`` finds the words
    the regex finds; None for any other line. All in C: a third of the cost of the regex
    and of dropping its break tokens.

    In such a line a word is a run of letters and digits with single inner apostrophes,
    and every other character separates words: so translate (separators to spaces, breaks
    to _SPLIT_BREAK if ``table`` keeps them) and blank the apostrophes that start or end a
    run. Where a digit is followed by a letter or an apostrophe (``3rd``, ``1990's``: the
    regex starts a word at a digit with ``\\d+`` and cuts it there), or by ``.`` or ``,``
    and a digit (``1,000``, ``7.0``: one word, and no break), the line is left to the
    regex, as are ``a''b`` (two words) and non-ASCII lines. A digit anywhere else ends
    its word exactly where ``split`` does (a digit after a letter continues the letter's
    word in both).
    """
    if not line.isascii():
        return None
    raw = line.encode("ascii")
    b = raw.translate(table)
    if _SPLIT_DIGIT in b:
        context = raw.translate(_DIGIT_CONTEXT)
        if b"0a" in context or b"0.0" in context:
            return None
        b = raw.translate(_DIGITS_KEPT[table])  # the digits kept
    if b"'" in b:
        if b"''" in b:
            return None
        brk = bytes([_SPLIT_BREAK])
        b = (b" " + b.replace(brk, b" " + brk + b" ") + b" ").replace(b" '", b" ").replace(b"' ", b" ")
    return b.decode("ascii")


def _words(line: str) -> list[str]:
    """``_WORD.findall(line)``, by :func:`_split_form` where it can."""
    form = _split_form(line, _ASCII_WORDS)
    if form is not None:
        return form.split()
    return (_WORD_ASCII if line.isascii() else _WORD).findall(line)


def _tokens(line: str) -> tuple[list[str], set[int]]:
    """The words of ``line`` (as :func:`_words`), and the indices among them where a
    sentence starts: 0, and after each break (an index may be ``len(words)``)."""
    form = _split_form(line, _ASCII_TOKENS)
    if form is not None:
        words: list[str] = []
        starts: set[int] = set()
        for sentence in form.split(chr(_SPLIT_BREAK)):  # a Python step per sentence, not per word
            starts.add(len(words))
            words += sentence.split()
        return words, starts
    tokens = (_TOKEN_ASCII if line.isascii() else _TOKEN).findall(line)  # a break is ''
    starts = {0}
    i = 0
    for k in range(1, tokens.count("") + 1):
        i = tokens.index("", i) + 1
        starts.add(i - k)  # the k breaks so far are not words
    return list(filter(None, tokens)), starts


def analyse(text: str) -> tuple[list[str], list[str], set[str]]:
    """Every normalised word (for fingerprints), the content terms, and the terms written as names.

    A name is a content word written with a capital that does not start a sentence (a
    line's first word, or the first after a break such as ``.`` or ``:``), in a line
    that is not set in Title Case or capitals.

    The per-word work is done in C where it can be: tokenising (:func:`_split_form`), one
    lexicon lookup per word, its fields transposed with ``zip``, the Title Case test one
    ``sum``; Python loops run per line and per sentence.
    """
    text = normalise(text)
    all_words: list[str] = []
    terms: list[str] = []
    names: set[str] = set()
    lex = _LEXICON.__getitem__
    for line in text.split("\n"):
        if line.islower():  # no capitals, so no names: the words alone are enough
            _line_words(line, all_words, terms)
            continue
        raw_words, starts = _tokens(line)
        if not raw_words:
            continue
        line_words, line_terms, weights, line_names = zip(*map(lex, raw_words), strict=True)
        all_words += line_words
        terms += filter(None, line_terms)
        # _is_title_case_line from the weights: long words, and those with a capital
        long_words, caps = divmod(sum(weights), _LONG)
        if long_words >= 2 and caps >= 0.7 * long_words:
            continue  # Title Case or capitals: no names to find
        # the names written anywhere but where a sentence starts
        named = list(line_names)
        for k in starts:
            if k < len(named):
                named[k] = None
        names.update(named)
    names.discard(None)
    return all_words, terms, names


def _line_words(line: str, all_words: list[str], terms: list[str]) -> None:
    """Append the normalised words of ``line`` to ``all_words`` and its terms to ``terms``."""
    raw_words = _words(line)
    if raw_words:
        line_words, line_terms, _, _ = zip(*map(_LEXICON.__getitem__, raw_words), strict=True)
        all_words += line_words
        terms += filter(None, line_terms)  # terms are never empty: drops the stop-words


def _analyse_words(text: str) -> tuple[list[str], list[str], set[str]]:
    """:func:`analyse` without the names (an empty set): the words and terms alone."""
    all_words: list[str] = []
    terms: list[str] = []
    for line in normalise(text).split("\n"):
        _line_words(line, all_words, terms)
    return all_words, terms, set()


def terms_and_names(text: str) -> tuple[list[str], set[str]]:
    """Content terms of ``text`` in order, and the subset that were written as names."""
    _, terms, names = analyse(text)
    return terms, names


_DIGIT = re.compile(r"\d")


def is_number(term: str) -> bool:
    return _DIGIT.search(term) is not None


@dataclass(frozen=True)
class Features:
    """What the clusterer needs to know about one article's text."""

    title_terms: tuple[str, ...]
    body_terms: tuple[str, ...]  # body without a repeated title; () for headline-only articles
    names: frozenset[str]
    numbers: frozenset[str]
    fingerprint: int  # 64-bit hash of the full normalised word sequence (title + body)
    shingles: frozenset[str]  # distinct content terms of title and body

    @property
    def length(self) -> int:
        """Distinct content terms: the measure of how much text there is to compare."""
        return len(self.shingles)


def extract(title: str, text: str) -> Features:
    """Features of an article from its plain-text title and body.

    A body that starts with the title (many feeds repeat it) is counted without it, and
    a body equal to the title (headline-only items) counts as no body.
    """
    title_terms, body_terms, names, shingles, fingerprint = _parts(title, text, analyse)
    return Features(
        title_terms=tuple(title_terms),
        body_terms=tuple(body_terms),
        names=frozenset(names),
        # a letters-only term has no digit: str.isalpha (in C) leaves few terms to the regex
        numbers=frozenset(t for t in filterfalse(str.isalpha, shingles) if _DIGIT.search(t) is not None),
        fingerprint=fingerprint,
        shingles=shingles,
    )


def extract_terms(title: str, text: str) -> tuple[frozenset[str], int]:
    """:func:`extract`'s ``shingles`` and ``fingerprint`` alone (no names looked for): what
    an article that only counts for IDF needs (``Clusterer.restore``'s transient ones)."""
    _, _, _, shingles, fingerprint = _parts(title, text, _analyse_words)
    return shingles, fingerprint


def _parts(
    title: str, text: str, analyser: Callable[[str], tuple[list[str], list[str], set[str]]]
) -> tuple[list[str], list[str], set[str], frozenset[str], int]:
    """Title terms, body terms (without a repeated title), names, shingles and fingerprint."""
    t_words, title_terms, title_names = analyser(title or "")
    if (text or "") == (title or ""):
        # a headline-only item repeats its title as the body: the same analysis (read only below)
        b_words, body_terms, body_names = t_words, title_terms, title_names
    else:
        b_words, body_terms, body_names = analyser(text or "")
    if t_words and b_words[: len(t_words)] == t_words:
        # drop the repeated title: its terms are the first len(title_terms) body terms
        body_terms = body_terms[len(title_terms) :]
        b_words = b_words[len(t_words) :]
    full = " ".join(t_words) + "\n" + " ".join(b_words)
    shingles = frozenset(title_terms + body_terms)
    return title_terms, body_terms, title_names | body_names, shingles, xxhash.xxh64_intdigest(full.encode("utf-8"))


def sketch_terms(f: Features) -> frozenset[str]:
    """The set the MinHash sketch is made of: every distinct content term (``f.shingles``,
    already made by :func:`extract`; a MinHash does not depend on the order of its terms).

    Plain content words rather than n-grams: reports of one event are rewritten, not
    copied, so they share words far more than phrases.
    """
    return f.shingles


# --------------------------------------------------------------------------- pure scores


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine of two sparse non-negative vectors, in [0, 1]; 0 when either is
    empty or zero. Scale-free: each vector is divided by its largest weight
    first, so tiny weights cannot underflow."""
    if not a or not b:
        return 0.0
    sa, sb = max(a.values()), max(b.values())
    if sa <= 0.0 or sb <= 0.0:
        return 0.0
    if len(a) > len(b):
        a, b, sa, sb = b, a, sb, sa
    dot = 0.0
    for k, v in a.items():
        w = b.get(k)
        if w is not None:
            dot += (v / sa) * (w / sb)
    if dot <= 0.0:
        return 0.0
    na = math.sqrt(sum((v / sa) ** 2 for v in a.values()))
    nb = math.sqrt(sum((v / sb) ** 2 for v in b.values()))
    return min(1.0, dot / (na * nb))


def jaccard(a: Iterable[str] | frozenset[str], b: Iterable[str] | frozenset[str]) -> float:
    """Jaccard index of two sets, in [0, 1]; 1.0 for two empty sets."""
    sa = a if isinstance(a, (set, frozenset)) else set(a)
    sb = b if isinstance(b, (set, frozenset)) else set(b)
    if not sa and not sb:
        return 1.0
    inter = len(sa & sb)
    return inter / (len(sa) + len(sb) - inter)


def weighted_overlap(a: Iterable[str], b: Iterable[str], weight: Mapping[str, float]) -> float:
    """Weighted Jaccard of two term sets (weights usually IDF), in [0, 1]; 0 if both empty.

    Used for names and numbers: sharing a rare name counts much more than sharing a
    common one.
    """
    sa = a if isinstance(a, (set, frozenset)) else set(a)
    sb = b if isinstance(b, (set, frozenset)) else set(b)
    union = sa | sb
    if not union:
        return 0.0
    tot = sum(weight.get(t, 1.0) for t in union)
    if tot <= 0.0:
        return 0.0
    inter = sum(weight.get(t, 1.0) for t in sa & sb)
    return inter / tot
