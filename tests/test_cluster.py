"""Clusterer behaviour: the seed case, copies, arrival order, invariants, restore equivalence."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.cluster import Clusterer, ClusterSettings, Decision, Document
from aggregator.config import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)

WIRE = (
    "Magnitude 6.4 earthquake strikes off Hualien, Taiwan",
    "A magnitude 6.4 earthquake struck off the coast of Hualien county in eastern Taiwan on Monday, "
    "the Central Weather Administration said. Buildings swayed in Taipei and the high-speed rail "
    "was halted for inspection. There were no immediate reports of casualties.",
)
OTHER_QUAKE = (
    "Magnitude 5.9 earthquake hits central Chile near Talca",
    "A magnitude 5.9 earthquake shook central Chile near the city of Talca on Monday, the national "
    "seismological centre said. Power was cut in parts of the Maule region; firefighters checked "
    "schools and hospitals. President Gabriel Boric convened the emergency committee.",
)
RATES = (
    "Bank of England holds interest rates at 5.25 percent",
    "The Bank of England kept its main interest rate unchanged at 5.25 percent on Thursday, with the "
    "Monetary Policy Committee voting 7-2 to hold. Governor Andrew Bailey said inflation was falling "
    "but that it was too early to cut borrowing costs.",
)
ARREST = (
    "Police arrest man after downtown Denver bank robbery",
    "Denver police arrested a 34-year-old man on Monday afternoon, an hour after a bank on 17th "
    "Street was robbed at gunpoint. Officers recovered cash and a handgun, spokesman Jay Casillas said.",
)


def doc(i: int, title: str, text: str, minutes: float | None = 0.0) -> Document:
    published = None if minutes is None else T0 + timedelta(minutes=minutes)
    return Document(id=i, title=title, text=text, published=published, source=f"outlet{i % 5}")


def run(clusterer: Clusterer, docs: list[Document]) -> tuple[dict[int, int], dict[int, Decision]]:
    counter = itertools.count(1000)
    parent: dict[int, int] = {}

    def find(s: int) -> int:
        while parent.get(s, s) != s:
            s = parent[s]
        return s

    stories: dict[int, int] = {}
    decisions: dict[int, Decision] = {}
    for d in docs:
        decision, sid = clusterer.assign(d, lambda: next(counter))
        for other in decision.merge:
            parent[find(other)] = find(sid)
        stories[d.id] = sid
        decisions[d.id] = decision
    return {a: find(s) for a, s in stories.items()}, decisions


# --------------------------------------------------------------------------- settings


def test_settings_from_app_settings() -> None:
    app = Settings(
        cluster_window_hours=24, lsh_num_perm=64, lsh_seed=7, lsh_scheme="affine64", lsh_threshold=0.2
    )
    cs = ClusterSettings.from_settings(app)
    assert (cs.window_hours, cs.num_perm, cs.seed, cs.scheme, cs.threshold) == (24.0, 64, 7, "affine64", 0.2)
    assert cs.signature_params() == "affine64:7:64"
    assert ClusterSettings().signature_params() == "affine32:1:128"


def test_datasketch_is_imported_only_by_the_sketch_module() -> None:
    root = Path(__file__).resolve().parents[1] / "aggregator" / "cluster"
    importers = [
        p.name for p in root.glob("*.py") if "datasketch" in p.read_text() and "import" in p.read_text()
    ]
    offenders = [
        p.name for p in root.glob("*.py") if p.name != "sketch.py" and "from datasketch" in p.read_text()
    ]
    assert offenders == [] and "sketch.py" in importers
    code = "import aggregator.cluster.metrics, aggregator.cluster.features, sys; print('datasketch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- seeds


def test_seed_reports() -> None:
    folder = SHARED / "seeds"
    if not folder.is_dir() or not list(folder.glob("*.txt")):
        pytest.skip(f"{folder} is absent (the shared data folder is not beside the checkout)")
    dates = {
        "000": "2022-03-30",
        "002": "2022-03-28",
        "004": "2022-03-21",
        "001": "2025-06-03",
        "003": "2025-06-03",
    }
    docs = []
    for path in sorted(folder.glob("*.txt")):
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        key = path.name[:3]
        published = datetime.fromisoformat(dates[key]).replace(tzinfo=UTC)
        docs.append((published, int(key), Document(int(key), title.strip(), body, published)))
    docs.sort(key=lambda x: (x[0], x[1]))
    stories, _ = run(Clusterer(ClusterSettings()), [d for _, _, d in docs])
    assert stories[1] == stories[3]
    assert len({stories[0], stories[2], stories[4], stories[1]}) == 4


@pytest.mark.xfail(
    reason="known limit: in a stream of two articles IDF cannot discount the shared quake vocabulary and "
    "the names/numbers conflict rule is off by default (it cost 1-2 points of B-cubed F1 on ECB+); see "
    "docs/clustering.md",
    strict=False,
)
def test_two_earthquakes_alone_in_a_tiny_stream_stay_apart() -> None:
    stories, _ = run(Clusterer(), [doc(1, *WIRE), doc(2, *OTHER_QUAKE, minutes=10)])
    assert stories[1] != stories[2]


def test_two_earthquakes_apart_with_the_conflict_rule_on() -> None:
    strict = ClusterSettings(conflict_factor=3.0)
    stories, decisions = run(Clusterer(strict), [doc(1, *WIRE), doc(2, *OTHER_QUAKE, minutes=10)])
    assert stories[1] != stories[2] and decisions[2].signal == "new"


# --------------------------------------------------------------------------- copies


def test_exact_copy_joins_and_is_marked() -> None:
    c = Clusterer()
    stories, decisions = run(c, [doc(1, *WIRE), doc(2, *ARREST), doc(3, *WIRE, minutes=30)])
    assert stories[3] == stories[1] != stories[2]
    assert decisions[3].signal == "copy" and decisions[3].copy_of == 1 and decisions[3].score == 1.0


def test_near_copy_lightly_edited_is_marked() -> None:
    title, text = WIRE
    edited = (
        title.replace("strikes", "hits") + " - Reuters",
        text.replace("Monday", "Monday morning").replace("high-speed rail", "high speed rail")
        + " (Reporting by Ben Blanchard)",
    )
    c = Clusterer()
    stories, decisions = run(c, [doc(1, *WIRE), doc(2, *ARREST), doc(3, *edited, minutes=5)])
    assert stories[3] == stories[1]
    assert decisions[3].signal == "copy" and decisions[3].copy_of == 1


def test_copies_always_together_whatever_came_between() -> None:
    rng = random.Random(4)
    filler = [
        doc(
            100 + k,
            f"Local council {k} approves budget for parks {k}",
            f"Council {k} voted on parks and roads {k}.",
            k,
        )
        for k in range(40)
    ]
    copies = [
        doc(1, *WIRE, minutes=0),
        doc(2, WIRE[0], WIRE[1], minutes=50),
        doc(3, WIRE[0].upper(), WIRE[1], minutes=55),
    ]
    sequence = filler + copies[1:]
    rng.shuffle(sequence)
    c = Clusterer()
    stories, decisions = run(c, [copies[0], *sequence])
    assert stories[1] == stories[2] == stories[3]
    assert decisions[2].copy_of == 1 and decisions[3].copy_of == 1


# --------------------------------------------------------------------------- invariants


def _event_docs() -> list[Document]:
    base = [WIRE, RATES, ARREST]
    variants = []
    i = 1
    for k, (title, text) in enumerate(base):
        words = text.split()
        for v in range(4):
            cut = words[v * 3 :]
            variants.append(doc(i, title, " ".join(cut), minutes=k * 0.1 + v * 0.2))
            i += 1
    return variants


def test_every_article_in_exactly_one_story_and_events_apart() -> None:
    docs = _event_docs()
    c = Clusterer()
    stories, _ = run(c, docs)
    assert set(stories) == {d.id for d in docs}
    assert len(c) == len(docs)
    groups = [{stories[d.id] for d in docs[k * 4 : (k + 1) * 4]} for k in range(3)]
    assert all(len(g) == 1 for g in groups)  # each event one story
    assert len(set().union(*groups)) == 3  # a quake, a rate decision and an arrest: three stories


@pytest.mark.parametrize("seed", range(5))
def test_order_within_the_same_minute_does_not_split_a_story(seed: int) -> None:
    docs = [Document(d.id, d.title, d.text, T0) for d in _event_docs()]
    random.Random(seed).shuffle(docs)
    stories, _ = run(Clusterer(), docs)
    partition = sorted(sorted(a for a in stories if stories[a] == s) for s in set(stories.values()))
    assert partition == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_undated_articles_are_at_the_same_moment() -> None:
    docs = [Document(d.id, d.title, d.text, None) for d in _event_docs()]
    stories, _ = run(Clusterer(), docs)
    assert len(set(stories.values())) == 3


def test_far_apart_in_time_starts_a_new_story() -> None:
    c = Clusterer(ClusterSettings(window_hours=72))
    stories, decisions = run(c, [doc(1, *WIRE), doc(2, WIRE[0], WIRE[1] + " More.", minutes=5 * 24 * 60)])
    assert stories[1] != stories[2]
    assert len(c) == 1  # the first article was pruned once the clock moved past the window


def test_empty_article_is_its_own_story() -> None:
    c = Clusterer()
    stories, decisions = run(c, [doc(1, *WIRE), doc(2, "", ""), doc(3, "the of and", "")])
    assert decisions[2].signal == "empty" and decisions[2].story_id is None
    assert len(set(stories.values())) == 3


def test_prepare_and_decide_do_not_change_state() -> None:
    c = Clusterer()
    run(c, _event_docs()[:6])
    before = c.snapshot()
    p = c.prepare(doc(99, *OTHER_QUAKE, minutes=3))
    c.decide(p)
    c.decide(p)
    assert c.snapshot() == before
    with pytest.raises(ValueError):
        c.add(c.prepare(doc(1, *WIRE)), 5)


# --------------------------------------------------------------------------- restore


def _stream() -> list[Document]:
    docs = _event_docs()
    extra = [
        doc(
            50 + k,
            f"Transit strike enters day {k} in Lisbon",
            f"Metro workers in Lisbon strike, day {k}.",
            60 + k,
        )
        for k in range(5)
    ]
    late = [doc(80, *OTHER_QUAKE, minutes=4 * 24 * 60), doc(81, *ARREST, minutes=4 * 24 * 60 + 5)]
    return docs + extra + late


def _daemon(
    clusterer: Clusterer, docs: list[Document], counter: itertools.count[int]
) -> list[tuple[Document, int, bytes]]:
    """What the daemon does: decide, create the story, add, apply merges; returns stored rows."""
    rows: list[tuple[Document, int, bytes]] = []
    for d in docs:
        p = clusterer.prepare(d)
        decision = clusterer.decide(p)
        sid = decision.story_id if decision.story_id is not None else next(counter)
        if decision.merge:
            clusterer.merge(sid, decision.merge)
            rows = [(rd, sid if rs in decision.merge else rs, sig) for rd, rs, sig in rows]
        clusterer.add(p, sid)
        rows.append((d, sid, clusterer.signature(p)))
    return rows


@pytest.mark.parametrize("cut", [0, 5, 12, 17])
@pytest.mark.parametrize("with_signature", [True, False])
def test_restore_is_equivalent_to_never_restarting(cut: int, with_signature: bool) -> None:
    docs = _stream()
    counter = itertools.count(1)
    live = Clusterer()
    rows = _daemon(live, docs[:cut], counter)
    restarted = Clusterer()
    for d, sid, sig in rows:
        restarted.restore(d, sid, sig if with_signature else None, ClusterSettings().signature_params())
    assert restarted.snapshot() == live.snapshot()
    start = next(counter)
    counter_a, counter_b = itertools.count(start), itertools.count(start)
    rest_a = _daemon(live, docs[cut:], counter_a)
    rest_b = _daemon(restarted, docs[cut:], counter_b)
    assert [(d.id, s) for d, s, _ in rest_a] == [(d.id, s) for d, s, _ in rest_b]
    assert restarted.snapshot() == live.snapshot()


def test_restore_ignores_a_signature_of_other_params() -> None:
    d = doc(1, *WIRE)
    c = Clusterer()
    p = c.prepare(d)
    wrong = Clusterer(ClusterSettings(seed=2)).signature(Clusterer(ClusterSettings(seed=2)).prepare(d))
    a = Clusterer()
    a.restore(d, 7, wrong, "affine32:2:128")
    b = Clusterer()
    b.restore(d, 7, b"\x00" * 3)  # wrong size: recomputed
    c.add(p, 7)
    assert a.snapshot() == c.snapshot() == b.snapshot()


# --------------------------------------------------------------------------- merges


@pytest.mark.parametrize(("gap_hours", "merged"), [(0, True), (60, False)])
def test_merge_needs_more_agreement_between_fragments_far_apart_in_time(gap_hours: int, merged: bool) -> None:
    """A bridging article merges two fragments published together, not yesterday's with today's."""
    c = Clusterer()
    for k in range(30):  # some unrelated stream, so IDF is not that of a three-article world
        c.add(
            c.prepare(doc(100 + k, f"Council {k} approves budget for parks and roads number {k}", "")),
            500 + k,
        )
    first = Document(1, "Stocks fall on weak China trade data, oil slips", "", T0)
    later = T0 + timedelta(hours=gap_hours)
    c.add(c.prepare(first), 1)
    c.add(c.prepare(Document(2, "Oil slides as exports slump in Asia", "", later)), 2)
    decision = c.decide(c.prepare(Document(3, "Stocks and oil fall on weak China exports data", "", later)))
    assert decision.story_id == 1
    assert decision.merge == ((2,) if merged else ())


# --------------------------------------------------------------------------- the in-process index's story labels


def test_decide_from_story_labels_equals_decide_from_the_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, decide counts the LSH hits per story from the index's labels; that must
    decide exactly as looking every hit up (the shared index's way), through merges and
    expiry, and the labels must follow the articles' stories."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import synthetic

    items = list(synthetic.Stream(2, length="mixed", days=0.1).items(700))
    c = Clusterer(ClusterSettings(window_hours=0.75))
    index = c._index
    local = index._local
    assert local is not None
    counter = itertools.count(1)
    merges = 0
    for n, it in enumerate(items):
        p = c.prepare(Document(n + 1, it.title, it.body or it.summary, it.published))
        decision = c.decide(p)
        with monkeypatch.context() as m:
            m.setattr(index, "query_labels", lambda sketch, min_bands: None)
            assert c.decide(p) == decision, n
        sid = decision.story_id if decision.story_id is not None else next(counter)
        c.add(p, sid)
        if decision.merge:
            merges += 1
            c.merge(sid, decision.merge)
    assert merges and len(c) < len(items)  # both were exercised
    for aid, a in c._articles.items():
        assert local._label[local._slot_of[aid]] == a.story
