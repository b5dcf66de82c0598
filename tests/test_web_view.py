"""The cluster view (issue 6): river filters and search, the story page (copies
folded, timeline, why each article joined), the feeds page's statistics, and
the operator's corrections (sign-in, CSRF, split, merge) in HTML and JSON.

Real SQLite files (and PostgreSQL for the search test marked ``postgres``), the
bundled demo ingested through the real pipeline, Flask's test client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from aggregator.cli import demo_dir, import_opml, make_engine
from aggregator.config import Settings
from aggregator.ingest import run_pass
from aggregator.storage import Storage
from aggregator.storage.facade import CorrectionError, StoryFilter, search_terms
from aggregator.web import create_app
from aggregator.web.common import ago, offset_text
from tests.test_web import BASE, T0, TOKEN, World, entry, make_settings, populate

HTML = "text/html; charset=utf-8"


# --------------------------------------------------------------------------- fixtures


@dataclass
class Demo:
    settings: Settings
    storage: Storage
    client: FlaskClient


def demo_settings(tmp_path: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'demo.db'}",
        "allow_private": True,
        "allow_file_urls": True,
        "base_url": BASE,
        "api_token": TOKEN,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def load_demo(settings: Settings) -> Storage:
    storage = Storage(settings.database_url)
    storage.ensure_schema(auto_upgrade=True)
    import_opml(storage, demo_dir() / "demo.opml")
    run_pass(storage, make_engine(settings), settings, all_feeds=True)
    return storage


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    settings = demo_settings(tmp_path)
    storage = load_demo(settings)
    yield Demo(settings, storage, create_app(settings, storage).test_client())
    storage.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = make_settings(tmp_path, page_size=10)
    storage = Storage(settings.database_url)
    storage.ensure_schema(auto_upgrade=True)
    storm, election, hostile, merged, feeds = populate(storage)
    app = create_app(settings, storage)
    yield World(storage, settings, app, app.test_client(), storm, election, hostile, merged, feeds)
    storage.close()


def story_ids(body: str) -> list[int]:
    return [int(found) for found in re.findall(r'<h2 id="story-(\d+)">', body)]


def text(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, (path, response.data[:400])
    return response.get_data(as_text=True)


def sign_in(client: FlaskClient, token: str = TOKEN, name: str = "Ada") -> None:
    form = text(client, "/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, form
    response = client.post("/login", data={"csrf_token": csrf.group(1), "token": token, "name": name, "next": "/"})
    assert response.status_code == 303, response.data[:300]


def csrf_of(body: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert found, "no CSRF token in the page"
    return found.group(1)


# --------------------------------------------------------------------------- pure helpers


def test_relative_and_offset_times() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert ago(now - timedelta(seconds=20), now) == "just now"
    assert ago(now - timedelta(minutes=12), now) == "12 min ago"
    assert ago(now - timedelta(hours=3, minutes=5), now) == "3 h ago"
    assert ago(now - timedelta(days=4), now) == "4 days ago"
    assert ago(now - timedelta(days=400), now) == "16 Oct 2025"
    assert ago(now + timedelta(minutes=5), now) == "in 5 min"
    assert offset_text(35 * 60) == "+35 min"
    assert offset_text(3 * 3600 + 600) == "+3 h 10 min"
    assert offset_text(3 * 86400) == "+3 days"


def test_search_terms_drop_every_query_operator() -> None:
    assert search_terms('Storm "hits" coast*') == ["storm", "hits", "coast"]
    assert search_terms('NEAR(a b) OR -x AND title:y ^z') == ["near", "a", "b", "or", "x", "and", "title", "y"]
    assert search_terms("') ; DROP TABLE articles; --") == ["drop", "table", "articles"]
    assert search_terms("   ") == []
    assert len(search_terms(" ".join(["w"] * 50))) == 8


# --------------------------------------------------------------------------- the river


def test_river_shows_headline_summary_counts_outlets_and_times(demo: Demo) -> None:
    body = text(demo.client, "/?order=sources")
    top = demo.storage.find_stories(StoryFilter(), limit=1, order="sources")
    story = top.stories[0]
    assert story_ids(body)[0] == story.id
    assert story.headline in body
    assert top.summaries[story.id][:60] in body  # one-line summary of the headline article
    assert f"{story.article_count} articles from {story.source_count} outlets" in body
    for outlet in story.sources:
        assert outlet in body
    # relative times with the UTC time in the tooltip and a machine-readable datetime
    assert re.search(r'first seen <span class="when" title="\d+ \w+ 2026, \d\d:\d\d UTC"><time datetime="2026-', body)
    assert " ago</time>" in body
    assert 'role="search"' in body and '<label for="f-q">Search</label>' in body


def test_river_text_search(demo: Demo) -> None:
    body = text(demo.client, "/?q=dockers+strike")
    assert "Dunmere dockers walk out" in body
    assert len(story_ids(body)) == 1
    assert "1 story matches “dockers strike”" in body
    # prefix matching and case folding
    assert story_ids(text(demo.client, "/?q=DOCKER")) == story_ids(body)
    # FTS5 operators and quotes are words, never syntax errors
    for hostile in ('"', "NEAR(", "a OR", "*", "-x", "title:storm", "') OR 1=1 --"):
        demo.client.get("/", query_string={"q": hostile}).close()
        assert demo.client.get("/", query_string={"q": hostile}).status_code == 200
    none = text(demo.client, "/?q=zzzzunknownword")
    assert story_ids(none) == []
    assert "No story matches these filters" in none
    assert text(demo.client, "/?q=" + "x" * 201, 400)


def test_search_finds_an_article_updated_in_place(world: World) -> None:
    feed = world.feeds["Alpha"]
    world.storage.save_entries(
        feed,
        [entry("a2", "Election results are in: landslide", published=T0 + timedelta(minutes=30), summary="x")],
        source="Alpha Times",
        fetched_at=T0 + timedelta(hours=9),
    )
    assert story_ids(text(world.client, "/?q=landslide")) == [world.election]
    assert story_ids(text(world.client, "/?q=coast")) == [world.storm]


def test_river_time_range(world: World) -> None:
    # every story of the world is from March 2026, long before "now"
    assert len(story_ids(text(world.client, "/"))) == 3
    assert story_ids(text(world.client, "/?range=7d")) == []
    assert story_ids(text(world.client, "/?range=all")) == story_ids(text(world.client, "/"))
    fresh_time = datetime.now(UTC) - timedelta(hours=2)
    world.storage.save_entries(
        world.feeds["Gamma"],
        [entry("c9", "Fresh news", published=fresh_time)],
        source="Gamma Wire",
        fetched_at=fresh_time,
    )
    fresh = [a for a in world.storage.pending_articles(10) if a.key == "c9"][0]
    story = world.storage.assign(fresh, None, score=0.0, signal="new", copy_of=None, signature=None, now=fresh_time)
    for key in ("6h", "24h", "3d"):
        assert story_ids(text(world.client, f"/?range={key}")) == [story], key
    assert story_ids(text(world.client, "/?range=1h")) == []
    assert "active in the last 6 hours" in text(world.client, "/?range=6h")
    text(world.client, "/?range=5y", 400)


def test_river_feed_and_folder_filters(demo: Demo) -> None:
    feeds = {feed.title: feed for feed in demo.storage.list_feeds()}
    courier = feeds["Coastline Courier"]
    body = text(demo.client, f"/?feed={courier.id}")
    ids = story_ids(body)
    assert ids
    for story_id in ids:
        found = demo.storage.get_story(story_id)
        assert found is not None and any(a.feed_id == courier.id for a in found.articles)
    assert "from Coastline Courier" in body
    assert f'<option value="{courier.id}" selected>Coastline Courier</option>' in body

    local = set(story_ids(text(demo.client, "/?folder=Local")))
    news = set(story_ids(text(demo.client, "/?folder=News")))
    everything = demo.storage.find_stories(StoryFilter(), limit=1000).total
    assert local and news and len(local | news) == everything
    assert set(ids) <= local
    assert story_ids(text(demo.client, "/?folder=Nowhere")) == []
    text(demo.client, "/?feed=abc", 400)
    assert story_ids(text(demo.client, "/?feed=99999")) == []


def test_river_filters_combine_and_survive_paging(demo: Demo) -> None:
    client = create_app(demo.settings.replace(page_size=3), demo.storage).test_client()
    body = text(client, "/?folder=News&min_sources=2&order=sources")
    ids = story_ids(body)
    assert 0 < len(ids) <= 3
    for story_id in ids:
        found = demo.storage.get_story(story_id)
        assert found is not None and found.story.source_count >= 2
    counts = [demo.storage.get_story(i).story.source_count for i in ids]  # type: ignore[union-attr]
    assert counts == sorted(counts, reverse=True)
    total = demo.storage.find_stories(StoryFilter(min_sources=2, folder="News"), limit=1).total
    if total > 3:
        next_link = re.search(r'rel="next" href="([^"]+)"', body)
        assert next_link
        href = next_link.group(1).replace("&amp;", "&")
        for part in ("folder=News", "min_sources=2", "order=sources", "page=2"):
            assert part in href
        assert set(story_ids(text(client, href))).isdisjoint(ids)


# --------------------------------------------------------------------------- a story


def test_story_page_folds_copies_and_explains_each_article(world: World) -> None:
    body = text(world.client, f"/stories/{world.storm}")
    found = world.storage.get_story(world.storm)
    assert found is not None
    copy = next(a for a in found.articles if a.copy_of is not None)
    # the copy is folded under its original, not listed as a report of its own
    folded = body.index('<details class="copies">')
    assert body.index(f'id="article-{copy.copy_of}"') < folded < body.index(f'id="article-{copy.id}"')
    assert "1 exact copy: Gamma Wire" in body
    assert body.count('<li id="article-') == len(found.articles)
    # why each joined: the words, the stored signal and similarity
    assert "similar text, score 0.42" in body
    assert "(signal <code>similar</code>, similarity 0.420)" in body
    assert "(signal <code>copy</code>, similarity 1.000)" in body
    assert f"copy of article #{copy.copy_of}" in body


def test_story_page_timeline_orders_outlets_by_first_report(world: World) -> None:
    body = text(world.client, f"/stories/{world.storm}")
    section = body[body.index('<section class="timeline"') : body.index("</section>")]
    outlets = re.findall(r'<span class="tl-outlet"><a href="#article-\d+">([^<]+)</a>', section)
    assert outlets == ["Alpha Times", "Beta Post", "Gamma Wire", "Gamma Wire"]
    assert re.findall(r'<span class="tl-offset">([^<]+)</span>', section) == [
        "first report", "+1 h", "+2 h", "+3 h",
    ]
    assert 'tl-dot p0"' in section and 'tl-dot p100"' in section
    assert '<time datetime="2026-03-01T14:00:00Z">' in section


def test_story_page_links_its_feeds_with_a_subscribe_hint(world: World) -> None:
    body = text(world.client, f"/stories/{world.storm}")
    assert f'href="/stories/{world.storm}/feed.atom">Follow this story (Atom feed)</a>' in body
    assert f'value="{BASE}/stories/{world.storm}/feed.atom"' in body  # copyable address
    assert "Subscribe in your feed reader" in body
    if f"/stories/{world.storm}/feed.rss" in body:  # the RSS route exists: linked with its own type
        assert f'type="application/rss+xml" title="RSS feed of this story" href="/stories/{world.storm}/feed.rss"' in body


# --------------------------------------------------------------------------- feeds


def test_feeds_page_shows_status_and_multi_source_share(demo: Demo) -> None:
    body = text(demo.client, "/feeds")
    stats = demo.storage.feed_stats()
    for feed in demo.storage.list_feeds():
        assert feed.title and feed.title in body
        share = stats[feed.id]
        assert f"{share.in_multi_source} of {share.articles}" in body
        assert f'href="/?feed={feed.id}"' in body
    assert "In multi-source stories" in body
    assert re.search(r"\d+ %<span", body)
    assert body.count('<span class="status status-ok">OK</span>') == len(stats)
    assert 'href="/?folder=Local"' in body


# --------------------------------------------------------------------------- operators


def test_sign_in_needs_the_token_and_a_csrf_token(world: World) -> None:
    client = world.client
    form = text(client, "/login")
    assert '<label for="login-token">Operator token</label>' in form
    csrf = csrf_of(form)
    no_csrf = client.post("/login", data={"token": TOKEN})
    assert no_csrf.status_code == 400
    wrong = client.post("/login", data={"csrf_token": csrf, "token": "nope"})
    assert wrong.status_code == 401
    assert "That token is not right." in wrong.get_data(as_text=True)
    assert "Operator:" not in text(client, "/")
    ok = client.post("/login", data={"csrf_token": csrf, "token": TOKEN, "name": "Ada", "next": "//evil.example/"})
    assert ok.status_code == 303
    assert ok.headers["Location"] == "/"  # never off-site
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = text(client, f"/stories/{world.storm}")
    assert "Operator: Ada" in page
    assert "Signed in as Ada." in page
    assert f'action="/stories/{world.storm}/split"' in page
    assert f'action="/stories/{world.storm}/merge"' in page
    out = client.post("/logout", data={"csrf_token": csrf_of(page)})
    assert out.status_code == 303
    assert "Operator:" not in text(client, "/")


def test_sign_in_is_off_without_a_token(world: World) -> None:
    client = create_app(world.settings.replace(api_token=None), world.storage).test_client()
    assert "Signing in is off" in text(client, "/login")
    assert 'name="token"' not in text(client, "/login")
    refused = client.post("/login", data={"csrf_token": "x", "token": TOKEN})
    assert refused.status_code == 403
    assert "Signing in is off" in refused.get_data(as_text=True)


def test_a_new_token_signs_everyone_out(world: World) -> None:
    sign_in(world.client)
    assert "Operator: Ada" in text(world.client, "/")
    other = create_app(world.settings.replace(api_token="another-token"), world.storage).test_client()
    other.set_cookie(
        "aggregator_session", world.client.get_cookie("aggregator_session").value  # type: ignore[union-attr]
    )
    assert "Operator:" not in text(other, "/")


def test_visitors_cannot_correct(world: World) -> None:
    page = text(world.client, f"/stories/{world.storm}")
    assert "/split" not in page and "/merge" not in page
    response = world.client.post(f"/stories/{world.storm}/split", data={"article_id": "1"})
    assert response.status_code == 403
    assert response.content_type == HTML
    assert world.client.post(f"/stories/{world.storm}/merge", data={"other": "2"}).status_code == 403


def test_corrections_need_the_csrf_token(world: World) -> None:
    sign_in(world.client)
    found = world.storage.get_story(world.storm)
    assert found is not None
    response = world.client.post(f"/stories/{world.storm}/split", data={"article_id": found.articles[1].id})
    assert response.status_code == 400
    assert world.storage.get_story(world.storm).story.article_count == 4  # type: ignore[union-attr]


def test_operator_splits_an_article_out(world: World) -> None:
    sign_in(world.client)
    before = world.storage.get_story(world.storm)
    assert before is not None
    feed_before = world.client.get(f"/stories/{world.storm}/feed.atom").data
    beta = next(a for a in before.articles if a.source == "Beta Post")
    page = text(world.client, f"/stories/{world.storm}")
    response = world.client.post(
        f"/stories/{world.storm}/split", data={"csrf_token": csrf_of(page), "article_id": str(beta.id)}
    )
    assert response.status_code == 303
    after = world.storage.get_story(world.storm)
    assert after is not None and beta.id not in {a.id for a in after.articles}
    assert after.story.updated_at > before.story.updated_at  # feeds change
    assert world.client.get(f"/stories/{world.storm}/feed.atom").data != feed_before
    moved = world.storage.get_article(beta.id)
    assert moved is not None and moved.story_id not in (None, world.storm)
    assert moved.signal == "split" and moved.score is None
    old_page = text(world.client, f"/stories/{world.storm}")
    assert f"now has its own story #{moved.story_id}" in old_page  # the flash message
    new_page = text(world.client, f"/stories/{moved.story_id}")
    assert "split out of another story by an operator" in new_page
    assert f"split this article (#{beta.id}) out of" in new_page
    assert "web:Ada" in old_page and "Corrections by operators" in old_page
    (record,) = world.storage.corrections_for(world.storm)
    assert (record.action, record.by, record.article_id, record.other_story_id) == (
        "split", "web:Ada", beta.id, moved.story_id,
    )
    assert "similar" in record.note


def test_splitting_an_original_takes_its_copies_along(world: World) -> None:
    found = world.storage.get_story(world.storm)
    assert found is not None
    copy = next(a for a in found.articles if a.copy_of is not None)
    new_story = world.storage.split_article(copy.copy_of, now=T0 + timedelta(days=1), by="test")  # type: ignore[arg-type]
    moved = world.storage.get_story(new_story)
    assert moved is not None
    assert {a.id for a in moved.articles} == {copy.id, copy.copy_of}
    assert moved.story.headline == "Storm hits coast"
    assert world.storage.get_story(world.storm).story.headline == "Storm batters coast"  # type: ignore[union-attr]


def test_a_story_with_one_article_cannot_be_split(world: World) -> None:
    found = world.storage.get_story(world.election)
    assert found is not None
    with pytest.raises(CorrectionError, match="nothing to split"):
        world.storage.split_article(found.articles[0].id, now=T0, by="test")
    with pytest.raises(CorrectionError, match="no article"):
        world.storage.split_article(999999, now=T0, by="test")
    sign_in(world.client)
    page = text(world.client, f"/stories/{world.election}")
    assert "/split" not in page  # no button where it cannot work
    wrong_story = world.client.post(
        f"/stories/{world.storm}/split", data={"csrf_token": csrf_of(page), "article_id": found.articles[0].id}
    )
    assert wrong_story.status_code == 400


def test_operator_merges_two_stories(world: World) -> None:
    sign_in(world.client)
    page = text(world.client, f"/stories/{world.storm}")
    csrf = csrf_of(page)
    response = world.client.post(
        f"/stories/{world.storm}/merge", data={"csrf_token": csrf, "other": f"#{world.election}"}
    )
    assert response.status_code == 303
    assert world.client.get(f"/stories/{world.election}").status_code == 301
    assert world.client.get(f"/stories/{world.election}/feed.atom").headers["Location"].endswith(
        f"/stories/{world.storm}/feed.atom"
    )
    body = text(world.client, f"/stories/{world.storm}")
    assert "Election results are in" in body
    assert f"merged story #{world.election} into this one" in body
    again = world.client.post(f"/stories/{world.storm}/merge", data={"csrf_token": csrf, "other": world.election})
    assert again.status_code == 303
    assert f"story {world.election} was already merged into story {world.storm}" in text(
        world.client, f"/stories/{world.storm}"
    )
    world.client.post(f"/stories/{world.storm}/merge", data={"csrf_token": csrf, "other": "424242"})
    assert "there is no story 424242" in text(world.client, f"/stories/{world.storm}")
    assert world.client.post(
        f"/stories/{world.storm}/merge", data={"csrf_token": csrf, "other": "abc"}
    ).status_code == 400


def test_api_split_and_merge(world: World) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    found = world.storage.get_story(world.storm)
    assert found is not None
    beta = next(a for a in found.articles if a.source == "Beta Post")
    path = f"/api/stories/{world.storm}/split"
    assert world.client.post(path, json={"article_id": beta.id}).status_code == 401
    assert world.client.post(path, json={"article_id": "x"}, headers=auth).status_code == 400
    assert world.client.post(path, json={"article_id": 999999}, headers=auth).status_code == 404
    created = world.client.post(path, json={"article_id": beta.id}, headers=auth)
    assert created.status_code == 201, created.get_json()
    new_story = created.get_json()["story"]["id"]
    assert created.get_json()["from"] == world.storm
    assert created.headers["Location"].endswith(f"/api/stories/{new_story}")
    assert world.storage.corrections_for(new_story)[0].by == "api"
    merge = f"/api/stories/{world.storm}/merge"
    assert world.client.post(merge, json={"other": new_story}).status_code == 401
    assert world.client.post(merge, json={"other": world.storm}, headers=auth).status_code == 400
    assert world.client.post(merge, json={"other": 424242}, headers=auth).status_code == 404
    merged = world.client.post(merge, json={"other": new_story}, headers=auth)
    assert merged.status_code == 200
    assert merged.get_json()["story"]["article_count"] == 4
    assert world.client.post(merge, json={"other": new_story}, headers=auth).status_code == 409
    off = create_app(world.settings.replace(api_token=None), world.storage).test_client()
    assert off.post(merge, json={"other": 1}, headers=auth).status_code == 403


# --------------------------------------------------------------------------- corrections are kept


def test_automatic_merges_never_undo_a_split(world: World) -> None:
    found = world.storage.get_story(world.storm)
    assert found is not None
    beta = next(a for a in found.articles if a.source == "Beta Post")
    generation = world.storage.cluster_generation()
    new_story = world.storage.split_article(beta.id, now=T0 + timedelta(days=1), by="test")
    assert world.storage.cluster_generation() > generation  # every process rebuilds its index
    later = T0 + timedelta(days=2)
    assert world.storage.merge_stories(world.storm, [new_story], now=later) == []  # the clustering's merge
    assert world.storage.merge_stories(new_story, [world.storm], now=later) == []
    assert world.storage.merge_stories(world.storm, [world.election, new_story], now=later) == [world.election]
    assert world.storage.get_article(beta.id).story_id == new_story  # type: ignore[union-attr]
    # an operator may still merge them on purpose
    assert world.storage.merge_stories(world.storm, [new_story], now=later, by="test") == [new_story]
    assert world.storage.get_article(beta.id).story_id == world.storm  # type: ignore[union-attr]


REPORT = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Late Wire</title><link>https://late.example/</link>
<description>late</description>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://late.example/{n}</link><guid>late-{n}</guid>
<pubDate>{date}</pubDate><description>{text}</description></item>"""


def test_a_split_survives_a_restart_and_new_articles(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path)
    storage = load_demo(settings)
    top = storage.find_stories(StoryFilter(min_sources=3), limit=1, order="sources").stories[0]
    found = storage.get_story(top.id)
    assert found is not None
    originals = [a for a in found.articles if a.copy_of is None]
    victim = originals[-1]
    new_story = storage.split_article(victim.id, now=datetime.now(UTC), by="test")
    storage.close()

    # restart: a new process (storage and engine), then new reports of the same event,
    # written like the victim and like the story's first article, arrive from a new feed
    storage = Storage(settings.database_url)
    first = originals[0]
    items = "".join(
        ITEM.format(
            title=article.title + " (update)",
            n=n,
            date=(article.published + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            text=(article.summary + " " + article.text)[:2000].replace("&", "&amp;").replace("<", "&lt;"),
        )
        for n, article in enumerate((victim, first, victim))
    )
    (tmp_path / "late.xml").write_text(REPORT.format(items=items), encoding="utf-8")
    storage.add_feed((tmp_path / "late.xml").resolve().as_uri(), now=datetime.now(UTC), title="Late Wire")
    report = run_pass(storage, make_engine(settings), settings, all_feeds=True)
    assert report.cluster.clustered == 3
    assert report.cluster.rebuilt
    assert storage.get_article(victim.id).story_id == new_story  # type: ignore[union-attr]
    assert storage.get_story(new_story).story.merged_into is None  # type: ignore[union-attr]
    assert storage.get_story(top.id).story.merged_into is None  # type: ignore[union-attr]
    for article in found.articles:
        if article.id != victim.id and article.copy_of != victim.id:
            assert storage.get_article(article.id).story_id == top.id  # type: ignore[union-attr]
    storage.close()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_find_stories_on_postgres(pg_url: str) -> None:
    storage = Storage(pg_url)
    storage.upgrade()
    try:
        storm, election, hostile, merged, feeds = populate(storage)
        with storage.engine.connect() as conn:  # the search index the migration made
            from sqlalchemy import text as sql

            assert conn.execute(
                sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_articles_search'")
            ).scalar_one() == 1

        def ids(**kwargs: object) -> list[int]:
            page = storage.find_stories(StoryFilter(**kwargs), limit=10)  # type: ignore[arg-type]
            assert page.total == len(page.stories)
            return [story.id for story in page.stories]

        assert ids(text="coast") == [storm]
        assert ids(text="COAS") == [storm]  # prefix, case-insensitive
        assert ids(text="storm update") == [storm]  # every word, from any of its articles' titles
        assert ids(text="election") == [election]
        assert ids(text="') | !& :* \\") == []
        assert ids(text="zzzz") == []
        assert ids(min_sources=2) == [storm]
        assert set(ids(feed_id=feeds["Beta"])) == {storm, hostile}
        assert ids(since=T0 + timedelta(hours=2, minutes=30)) == [storm]
        page = storage.find_stories(StoryFilter(), limit=10)
        assert page.summaries[storm] == "Body."
        stats = storage.feed_stats()
        assert stats[feeds["Alpha"]].articles == 2 and stats[feeds["Alpha"]].in_multi_source == 1
        new_story = storage.split_article(
            storage.get_story(storm).articles[1].id, now=T0 + timedelta(days=1), by="pg"  # type: ignore[union-attr]
        )
        assert storage.merge_stories(storm, [new_story], now=T0 + timedelta(days=2)) == []
        assert [c.action for c in storage.corrections_for(storm)] == ["split"]
    finally:
        storage.close()
