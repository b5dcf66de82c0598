"""WebSub: the hub's pure decisions, its endpoint, and full round trips with a
subscriber served by a real HTTP server on 127.0.0.1, on real SQLite data
ingested by the real pipeline."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from flask.testing import FlaskClient

from aggregator import websub
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.fetch import make_client
from aggregator.ingest import ClusterEngine, run_pass
from aggregator.models import Story
from aggregator.storage import Storage
from aggregator.web import create_app
from aggregator.websub import Hub, RequestError, Topic, parse_topic
from tests.feedserver import FeedServer, RecordedRequest, Response

BASE = "http://news.example"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

STORM = (
    "Storm Orla breached the harbour wall at Kelvar Harbour on Monday, flooding 60 homes on Quay Street, "
    "the coastguard said. Mayor Ilse Brandt opened the sports hall to residents overnight."
)


def rss(guid: str, title: str, text: str, *, outlet: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{outlet}</title><link>https://{outlet.lower()}.example/</link><description>x</description>"
        f"<item><guid>{guid}</guid><title>{title}</title><link>https://{outlet.lower()}.example/{guid}</link>"
        f"<description>{text}</description><pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate></item>"
        "</channel></rss>"
    ).encode()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def hub_settings(settings: Settings) -> Settings:
    return settings.replace(base_url=BASE, websub_retry_seconds=30, websub_max_attempts=3, websub_timeout=5.0)


@pytest.fixture
def hub(hub_settings: Settings, storage: Storage) -> Iterator[Hub]:
    with Hub(hub_settings, storage) as running:
        yield running


@pytest.fixture
def client(hub_settings: Settings, storage: Storage) -> FlaskClient:
    return create_app(hub_settings, storage).test_client()


@dataclass
class Subscriber:
    """A WebSub subscriber's callback: answers the hub's challenges (when it
    agrees) and records the content distributions."""

    agree: bool = True
    echo: str | None = None  # answer this instead of the challenge
    post_status: int = 204
    verifications: list[dict[str, str]] = field(default_factory=list)
    posts: list[RecordedRequest] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __call__(self, request: RecordedRequest) -> Response:
        if request.method == "GET":
            params = dict(parse_qsl(request.query))
            self.verifications.append(params)
            if not self.agree:
                return Response(status=404, body=b"no thanks")
            return Response(body=(self.echo if self.echo is not None else params["hub.challenge"]).encode())
        self.posts.append(request)
        self.arrived.set()
        return Response(status=self.post_status)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


@pytest.fixture
def subscriber(server: FeedServer) -> Subscriber:
    callback = Subscriber()
    server.route("/cb", callback)
    return callback


class World:
    """Feeds written to local files and run through the real pipeline."""

    def __init__(self, storage: Storage, settings: Settings, tmp_path: Path) -> None:
        self.storage = storage
        self.settings = settings
        self.tmp_path = tmp_path
        self.engine = ClusterEngine(ClusterSettings.from_settings(settings))

    def publish(self, name: str, guid: str, title: str, text: str = STORM) -> None:
        path = self.tmp_path / f"{name}.xml"
        path.write_bytes(rss(guid, title, text, outlet=name.title()))
        if self.storage.get_feed_by_url(path.as_uri()) is None:
            self.storage.add_feed(path.as_uri(), now=datetime.now(UTC))

    def ingest(self) -> None:
        run_pass(self.storage, self.engine, self.settings, all_feeds=True)

    def story_of(self, title: str) -> int:
        for found in self.storage.iter_stories():
            if any(article.title == title for article in found.articles):
                return found.story.id
        raise AssertionError(f"no story has an article titled {title!r}")


@pytest.fixture
def world(storage: Storage, hub_settings: Settings, tmp_path: Path) -> World:
    made = World(storage, hub_settings, tmp_path)
    made.publish("wire", "w1", "Storm Orla breaches Kelvar harbour wall")
    made.ingest()
    return made


def subscribe(
    client: FlaskClient, topic: str, callback: str, mode: str = "subscribe", **extra: str
) -> tuple[int, str]:
    form = {"hub.mode": mode, "hub.topic": topic, "hub.callback": callback, **extra}
    response = client.post("/websub", data=form)
    return response.status_code, response.get_data(as_text=True)


def story_topic(story_id: int, fmt: str = "atom") -> str:
    return f"{BASE}/stories/{story_id}/feed.{fmt}"


def check_signature(request: RecordedRequest, secret: str) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-hub-signature"] == expected


# --------------------------------------------------------------------------- pure decisions


def test_parse_topic_knows_our_feeds() -> None:
    assert parse_topic(f"{BASE}/feed.atom", BASE) == Topic(kind="river", fmt="atom", base_url=BASE)
    assert parse_topic(f"{BASE}/stories/12/feed.rss", BASE + "/") == Topic(
        kind="story", fmt="rss", base_url=BASE, story_id=12
    )
    river = parse_topic(f"{BASE}/feed.rss?folder=Local&q=harbour++strike&min_sources=2&feed=4&page=1", BASE)
    assert (river.min_sources, river.q, river.feed_id, river.folder) == (2, "harbour strike", 4, "Local")
    assert river.url() == f"{BASE}/feed.rss?min_sources=2&q=harbour+strike&feed=4&folder=Local"
    # Host case, an explicit default port and a path prefix are the same place.
    prefixed = parse_topic("HTTPS://News.Example:443/agg/feed.atom", "https://news.example/agg")
    assert prefixed.base_url == "https://news.example:443/agg" and prefixed.kind == "river"
    # Without a base, the base is what precedes the route.
    assert parse_topic("https://a.example/x/y/stories/3/feed.atom").base_url == "https://a.example/x/y"
    # Defaults are left out of the key: the same content is one topic.
    assert (
        parse_topic(f"{BASE}/feed.atom?min_sources=1", BASE).key == parse_topic(f"{BASE}/feed.atom", BASE).key
    )


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "missing"),
        ("https://news.example/feed.atom", "not a feed of this hub"),  # other scheme
        ("http://other.example/feed.atom", "not a feed of this hub"),
        ("http://news.example:8080/feed.atom", "not a feed of this hub"),
        (f"{BASE}/stories/1", "not a feed of this hub"),
        (f"{BASE}/feed.json", "not a feed of this hub"),
        (f"{BASE}/api/feed.atom", "not a feed of this hub"),
        (f"{BASE}/stories/0/feed.atom", "story id"),
        (f"{BASE}/feed.atom?page=2", "first page"),
        (f"{BASE}/feed.atom?utm_source=x", "unknown parameter utm_source"),
        (f"{BASE}/feed.atom?min_sources=0", "min_sources"),
        (f"{BASE}/feed.atom?min_sources=two", "min_sources"),
        (f"{BASE}/feed.atom?feed=-1", "feed"),
        (f"{BASE}/feed.atom?q=a&q=b", "twice"),
        (f"{BASE}/feed.atom?q=" + "x" * 201, "too long"),
        (f"{BASE}/stories/3/feed.atom?min_sources=2", "takes no parameters"),
        (f"{BASE}/feed.atom#top", "fragment"),
        (f"{BASE}/feed.atom x", "spaces"),
        ("file:///etc/passwd", "http(s) URL"),
    ],
)
def test_parse_topic_refuses_with_a_reason(topic: str, reason: str) -> None:
    with pytest.raises(RequestError, match=None) as caught:
        parse_topic(topic, BASE)
    assert reason in caught.value.reason
    assert caught.value.status == 400


def test_callback_rules() -> None:
    problem = websub.callback_problem
    assert problem("https://reader.example/push?user=3", allow_private=False) is None
    assert "missing" in (problem("", allow_private=False) or "")
    assert "http or https" in (problem("ftp://reader.example/cb", allow_private=False) or "")
    assert "http or https" in (problem("javascript:alert(1)", allow_private=False) or "")
    assert "http or https" in (problem("http:///cb", allow_private=False) or "")
    assert "fragment" in (problem("https://reader.example/cb#x", allow_private=False) or "")
    assert "too long" in (problem("https://reader.example/" + "x" * 2048, allow_private=False) or "")
    for private in (
        "http://127.0.0.1:8000/cb",
        "http://10.1.2.3/cb",
        "http://[::1]/cb",
        "http://169.254.169.254/latest",
        "http://[::ffff:192.168.0.1]/cb",
        "http://localhost/cb",
    ):
        assert "public addresses only" in (problem(private, allow_private=False) or ""), private
        assert problem(private, allow_private=True) is None


def test_lease_is_the_default_within_bounds(settings: Settings) -> None:
    s = settings.replace(websub_default_lease=1000, websub_max_lease=5000)
    assert websub.lease_seconds(None, s) == 1000
    assert websub.lease_seconds("", s) == 1000
    assert websub.lease_seconds("3600", s) == 3600
    assert websub.lease_seconds("999999999", s) == 5000
    assert websub.lease_seconds("1", s) == websub.MIN_LEASE_SECONDS
    for bad in ("-5", "1.5", "ten", "1e9"):
        with pytest.raises(RequestError, match="lease_seconds"):
            websub.lease_seconds(bad, s)


def test_parse_request(settings: Settings) -> None:
    s = settings.replace(allow_private=False)
    form = {"hub.mode": "subscribe", "hub.topic": f"{BASE}/feed.atom", "hub.callback": "https://r.example/cb"}
    wanted = websub.parse_request(
        {**form, "hub.secret": "x" * 199, "hub.lease_seconds": "600"}, base_url=BASE, settings=s
    )
    assert (wanted.mode, wanted.secret, wanted.lease_seconds, wanted.parsed.kind) == (
        "subscribe",
        "x" * 199,
        600,
        "river",
    )
    assert websub.parse_request(form, base_url=BASE, settings=s).lease_seconds == s.websub_default_lease
    gone = websub.parse_request(
        {**form, "hub.mode": "unsubscribe", "hub.secret": "x" * 500}, base_url=BASE, settings=s
    )
    assert (gone.mode, gone.secret, gone.lease_seconds) == ("unsubscribe", None, 0)
    refusals = {
        "hub.mode is missing": {**form, "hub.mode": ""},
        "publish is not accepted": {**form, "hub.mode": "publish"},
        "subscribe or unsubscribe": {**form, "hub.mode": "renew"},
        "shorter than 200 bytes": {**form, "hub.secret": "\u00e9" * 100},  # 200 bytes in UTF-8
        "public addresses only": {**form, "hub.callback": "http://192.168.1.1/cb"},
        "not a feed of this hub": {**form, "hub.topic": "https://evil.example/feed.atom"},
    }
    for reason, bad in refusals.items():
        with pytest.raises(RequestError) as caught:
            websub.parse_request(bad, base_url=BASE, settings=s)
        assert reason in caught.value.reason


def test_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b"<feed>\xe2\x80\x9c</feed>"
    expected = hmac.new(b"k\xc3\xa9y", body, hashlib.sha256).hexdigest()
    assert websub.signature("k\u00e9y", body) == f"sha256={expected}"


def test_retries_back_off_exponentially_and_end(settings: Settings) -> None:
    s = settings.replace(websub_retry_seconds=30, websub_max_attempts=5)
    assert [websub.retry_delay(n, s) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert websub.retry_delay(40, s) == websub.MAX_RETRY_DELAY
    assert websub.next_attempt(1, T0, s) == T0 + timedelta(seconds=30)
    assert websub.next_attempt(4, T0, s) == T0 + timedelta(seconds=240)
    assert websub.next_attempt(5, T0, s) is None  # the fifth attempt was the last


def test_verification_url_and_challenge() -> None:
    url = websub.verification_url(
        "https://r.example/cb?user=3", "subscribe", f"{BASE}/feed.atom?q=a b", "c-1", 600
    )
    assert url.startswith("https://r.example/cb?user=3&hub.mode=subscribe&")
    assert dict(parse_qsl(url.split("?", 1)[1])) == {
        "user": "3",
        "hub.mode": "subscribe",
        "hub.topic": f"{BASE}/feed.atom?q=a b",
        "hub.challenge": "c-1",
        "hub.lease_seconds": "600",
    }
    assert "lease" not in websub.verification_url("https://r.example/cb", "unsubscribe", "t", "c", None)
    assert websub.challenge_accepted(200, b"c-1", "c-1")
    assert websub.challenge_accepted(204, b"c-1", "c-1")
    assert not websub.challenge_accepted(200, b"c-1\n", "c-1")
    assert not websub.challenge_accepted(200, b"", "c-1")
    assert not websub.challenge_accepted(404, b"c-1", "c-1")
    assert not websub.challenge_accepted(302, b"c-1", "c-1")


def test_hub_url_and_link_header() -> None:
    assert websub.hub_url(BASE + "/") == f"{BASE}/websub"
    assert websub.link_header(f"{BASE}/websub", f"{BASE}/feed.atom") == (
        f'<{BASE}/websub>; rel="hub", <{BASE}/feed.atom>; rel="self"'
    )


def test_versions_follow_what_the_feed_shows() -> None:
    topic = Topic(kind="story", fmt="atom", base_url=BASE, story_id=1)
    story = Story(1, "h", T0, T0, T0, T0, 1, 1, ("Wire",))
    grown = Story(1, "h", T0, T0 + timedelta(seconds=1), T0, T0, 2, 2, ("Wire", "Paper"))
    assert websub.story_version(topic, story, 50) == websub.story_version(topic, story, 50)
    assert websub.story_version(topic, story, 50) != websub.story_version(topic, grown, 50)
    rss_topic = Topic(kind="story", fmt="rss", base_url=BASE, story_id=1)
    assert websub.story_version(topic, story, 50) != websub.story_version(rss_topic, story, 50)
    river = Topic(kind="river", fmt="atom", base_url=BASE)
    assert websub.river_version(river, 1, [story], 50) != websub.river_version(river, 1, [grown], 50)
    assert websub.river_version(river, 1, [story], 50) == websub.river_version(river, 1, [story], 50)


# --------------------------------------------------------------------------- the endpoint


def test_bad_requests_are_refused_with_reasons(client: FlaskClient, world: World) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    cb = "http://reader.example/cb"
    cases = [
        ({"hub.topic": story_topic(story), "hub.callback": cb}, 400, "hub.mode is missing"),
        ({"hub.mode": "subscribe", "hub.callback": cb}, 400, "hub.topic is missing"),
        (
            {"hub.mode": "subscribe", "hub.topic": "https://elsewhere.example/feed.atom", "hub.callback": cb},
            400,
            "not a feed of this hub",
        ),
        ({"hub.mode": "subscribe", "hub.topic": story_topic(story)}, 400, "hub.callback is missing"),
        (
            {"hub.mode": "subscribe", "hub.topic": story_topic(story), "hub.callback": "gopher://r.example/"},
            400,
            "http or https",
        ),
        (
            {
                "hub.mode": "subscribe",
                "hub.topic": story_topic(story),
                "hub.callback": cb,
                "hub.secret": "s" * 200,
            },
            400,
            "shorter than 200 bytes",
        ),
        (
            {
                "hub.mode": "subscribe",
                "hub.topic": story_topic(story),
                "hub.callback": cb,
                "hub.lease_seconds": "forever",
            },
            400,
            "hub.lease_seconds",
        ),
        ({"hub.mode": "subscribe", "hub.topic": story_topic(999), "hub.callback": cb}, 404, "no story 999"),
        (
            {"hub.mode": "subscribe", "hub.topic": f"{BASE}/feed.atom?feed=77", "hub.callback": cb},
            404,
            "no feed 77",
        ),
    ]
    for form, status, reason in cases:
        response = client.post("/websub", data=form)
        assert response.status_code == status, (form, response.get_data(as_text=True))
        assert reason in response.get_data(as_text=True)
        assert response.mimetype == "text/plain"
    assert client.get("/websub").status_code == 405
    assert world.storage.websub_counts()["requests"] == 0


def test_a_merged_storys_feed_points_to_the_survivor(client: FlaskClient, world: World) -> None:
    world.publish(
        "gazette", "g1", "Council approves library budget", "The council approved the library budget."
    )
    world.ingest()
    survivor = world.story_of("Storm Orla breaches Kelvar harbour wall")
    merged = world.story_of("Council approves library budget")
    world.storage.merge_stories(survivor, [merged], now=datetime.now(UTC), by="test")
    status, reason = subscribe(client, story_topic(merged), "http://reader.example/cb")
    assert status == 400
    assert f"merged into story {survivor}" in reason and story_topic(survivor) in reason


def test_a_request_is_accepted_and_stored_without_touching_the_network(
    client: FlaskClient, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    status, text = subscribe(client, story_topic(story), server.url("/cb"), **{"hub.lease_seconds": "7200"})
    assert status == 202 and "verify" in text
    (waiting,) = world.storage.websub_requests()
    assert (waiting.mode, waiting.topic, waiting.lease_seconds, waiting.story_id) == (
        "subscribe",
        story_topic(story),
        7200,
        story,
    )
    assert server.requests == []  # verification is the worker's job, off the request thread
    # A newer request for the same (topic, callback) replaces the waiting one.
    assert subscribe(client, story_topic(story), server.url("/cb"), mode="unsubscribe")[0] == 202
    assert [r.mode for r in world.storage.websub_requests()] == ["unsubscribe"]


def test_private_callbacks_are_refused_unless_allowed(
    hub_settings: Settings, storage: Storage, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    strict = hub_settings.replace(allow_private=False)
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    client = create_app(strict, storage).test_client()
    status, reason = subscribe(client, story_topic(story), server.url("/cb"))
    assert status == 400 and "127.0.0.1 is a private address" in reason
    # A host name is checked after DNS resolution, when the hub connects.
    callback = f"http://localhost:{server.port}/cb"
    with Hub(strict, storage) as strict_hub, make_client() as http:
        with pytest.raises(websub.CallbackError, match="private address"):
            websub.call(http, "GET", callback, headers={}, timeout=2, allow_private=False)
        storage.websub_add_request(
            mode="subscribe",
            topic=story_topic(story),
            callback=callback,
            secret=None,
            lease_seconds=600,
            story_id=story,
            now=T0,
            max_pending=10,
        )
        report = strict_hub.run_once()
    assert (report.verified, report.refused) == (0, 1)
    assert server.requests == [] and storage.websub_active(datetime.now(UTC)) == []


# --------------------------------------------------------------------------- round trips


def test_round_trip_subscribe_verify_distribute_unsubscribe(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    topic, callback, secret = story_topic(story), server.url("/cb"), "a s3cret only we know"

    assert subscribe(client, topic, callback, **{"hub.secret": secret, "hub.lease_seconds": "3600"})[0] == 202
    report = hub.run_once()
    assert report.verified == 1
    (check,) = subscriber.verifications
    assert (check["hub.mode"], check["hub.topic"], check["hub.lease_seconds"]) == ("subscribe", topic, "3600")
    assert len(check["hub.challenge"]) >= 32
    active = world.storage.websub_subscription(topic, callback)
    assert active is not None and active.secret == secret
    assert 3590 <= (active.expires_at - datetime.now(UTC)).total_seconds() <= 3600
    assert hub.run_once().delivered == 0  # nothing changed since the subscription

    # A second outlet reports the same event: its article joins the story.
    world.publish("paper", "p1", "Kelvar floods after Storm Orla breaks the harbour wall")
    world.ingest()
    assert world.story_of("Kelvar floods after Storm Orla breaks the harbour wall") == story
    hub.story_changed([story])
    report = hub.run_once()
    assert (report.queued, report.delivered) == (1, 1)
    (post,) = subscriber.posts
    check_signature(post, secret)
    assert post.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert post.headers["link"] == f'<{BASE}/websub>; rel="hub", <{topic}>; rel="self"'
    assert b"Kelvar floods after Storm Orla breaks the harbour wall" in post.body
    assert b"Storm Orla breaches Kelvar harbour wall" in post.body
    assert post.body == client.get(f"/stories/{story}/feed.atom").data  # what a poll would get
    assert hub.run_once().delivered == 0  # delivered once, not again

    assert subscribe(client, topic, callback, mode="unsubscribe")[0] == 202
    assert hub.run_once().verified == 1
    assert subscriber.verifications[-1]["hub.mode"] == "unsubscribe"
    assert "hub.lease_seconds" not in subscriber.verifications[-1]
    assert world.storage.websub_subscription(topic, callback) is None

    world.publish("gazette", "g1", "Kelvar harbour wall: Storm Orla floods Quay Street homes")
    world.ingest()
    hub.story_changed([story])
    assert hub.run_once().delivered == 0
    assert len(subscriber.posts) == 1


def test_changes_are_found_without_the_hook_and_river_topics_are_served(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    topics = [story_topic(story, "rss"), f"{BASE}/feed.atom?min_sources=2", f"{BASE}/feed.atom?q=library"]
    for topic in topics:
        assert subscribe(client, topic, server.url("/cb"))[0] == 202
    assert hub.run_once().verified == 3

    # Another process (the CLI's `aggregator update`) ingests; nobody calls the hook.
    other = Storage(world.storage.url)
    try:
        World(other, world.settings, world.tmp_path).publish(
            "paper", "p1", "Kelvar floods as Storm Orla hits"
        )
        World(other, world.settings, world.tmp_path).ingest()
    finally:
        other.close()
    report = hub.run_once()
    assert report.delivered == 2  # the story's RSS feed and the river of 2+ sources, not the search
    by_topic = {websub_self(post): post for post in subscriber.posts}
    assert set(by_topic) == set(topics[:2])
    assert by_topic[topics[0]].headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert "x-hub-signature" not in by_topic[topics[0]].headers  # no secret, no signature
    assert b"Kelvar floods as Storm Orla hits" in by_topic[topics[0]].body
    assert by_topic[topics[1]].body == client.get("/feed.atom?min_sources=2").data
    assert hub.run_once().delivered == 0


def websub_self(post: RecordedRequest) -> str:
    return post.headers["link"].split("<")[2].split(">")[0]


def test_a_failed_verification_leaves_no_subscription(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    refuses, wrong = Subscriber(agree=False), Subscriber(echo="something else")
    server.route("/refuses", refuses)
    server.route("/wrong", wrong)
    server.route("/broken", Response(status=500))
    server.redirect("/moved", "/wrong")
    callbacks = [server.url(path) for path in ("/refuses", "/wrong", "/broken", "/moved", "/nothing-here")]
    for callback in callbacks:
        assert subscribe(client, story_topic(story), callback)[0] == 202
    callbacks.append(f"http://127.0.0.1:{free_port()}/closed")
    assert subscribe(client, story_topic(story), callbacks[-1])[0] == 202
    report = hub.run_once()
    assert (report.verified, report.refused) == (0, 6)
    assert len(refuses.verifications) == 1 and len(wrong.verifications) == 1
    assert world.storage.websub_active(datetime.now(UTC)) == []
    assert world.storage.websub_counts() == {"subscriptions": 0, "requests": 0, "deliveries": 0}
    # Re-subscribing renews: a failed renewal leaves the active subscription as it was.
    good = Subscriber()
    server.route("/good", good)
    assert (
        subscribe(client, story_topic(story), server.url("/good"), **{"hub.lease_seconds": "600"})[0] == 202
    )
    hub.run_once()
    before = world.storage.websub_subscription(story_topic(story), server.url("/good"))
    good.agree = False
    assert (
        subscribe(client, story_topic(story), server.url("/good"), **{"hub.lease_seconds": "900"})[0] == 202
    )
    assert hub.run_once().refused == 1
    assert world.storage.websub_subscription(story_topic(story), server.url("/good")) == before


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _subscribed(
    client: FlaskClient, hub: Hub, topic: str, callback: str, now: datetime, **extra: str
) -> None:
    assert subscribe(client, topic, callback, **extra)[0] == 202
    assert hub.run_once(now).verified == 1


def test_a_failing_callback_is_retried_with_back_off_then_dropped(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator.websub")
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    failing = Subscriber(post_status=503)
    server.route("/failing", failing)
    topic, callback = story_topic(story), server.url("/failing")
    start = datetime.now(UTC)
    _subscribed(client, hub, topic, callback, start)
    world.publish("paper", "p1", "Kelvar floods after Storm Orla")
    world.ingest()
    hub.story_changed([story])

    assert hub.run_once(start).retried == 1  # attempt 1 fails: retry in 30 s
    (delivery,) = world.storage.websub_due_deliveries(start + timedelta(seconds=30))
    assert (delivery.attempts, delivery.last_error) == (1, "HTTP 503")
    assert delivery.due_at == start + timedelta(seconds=30)
    assert hub.run_once(start + timedelta(seconds=29)).retried == 0  # not due yet
    assert hub.run_once(start + timedelta(seconds=30)).retried == 1  # attempt 2: retry in 60 s
    assert hub.run_once(start + timedelta(seconds=89)).retried == 0
    report = hub.run_once(start + timedelta(seconds=90))  # attempt 3 of 3: dropped
    assert (report.retried, report.dropped) == (0, 1)
    assert len(failing.posts) == 3
    assert world.storage.websub_counts()["deliveries"] == 0
    assert world.storage.websub_subscription(topic, callback) is not None  # the subscription stays
    (dropped,) = [r for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "dropped"]
    assert dropped.event == "websub_delivery" and dropped.levelno == logging.WARNING  # type: ignore[attr-defined]
    assert dropped.fields["error"] == "HTTP 503" and dropped.fields["attempt"] == 3  # type: ignore[attr-defined]

    # It is not retried again for the same content, but the next change is sent.
    assert hub.run_once(start + timedelta(hours=2)).retried == 0
    failing.post_status = 200
    world.publish("gazette", "g1", "Storm Orla: Kelvar harbour wall gives way")
    world.ingest()
    hub.story_changed([story])
    assert hub.run_once(start + timedelta(hours=3)).delivered == 1
    assert b"Storm Orla: Kelvar harbour wall gives way" in failing.posts[-1].body


def test_a_gone_callback_ends_its_subscription(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    gone = Subscriber(post_status=410)
    server.route("/gone", gone)
    _subscribed(client, hub, story_topic(story), server.url("/gone"), datetime.now(UTC))
    world.publish("paper", "p1", "Kelvar floods after Storm Orla")
    world.ingest()
    hub.story_changed([story])
    assert hub.run_once().gone == 1
    assert world.storage.websub_subscription(story_topic(story), server.url("/gone")) is None


def test_leases_expire_and_resubscribing_renews(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    topic, callback = story_topic(story), server.url("/cb")
    start = datetime.now(UTC)
    _subscribed(client, hub, topic, callback, start, **{"hub.lease_seconds": "600"})
    assert subscriber.verifications[0]["hub.lease_seconds"] == "600"

    # Renewal before the end: a new lease from the renewal's time.
    _subscribed(client, hub, topic, callback, start + timedelta(seconds=500), **{"hub.lease_seconds": "600"})
    renewed = world.storage.websub_subscription(topic, callback)
    assert renewed is not None and renewed.expires_at == start + timedelta(seconds=1100)

    # The lease ends: the subscription goes, and changes are no longer sent.
    assert hub.run_once(start + timedelta(seconds=1099)).expired == 0
    assert hub.run_once(start + timedelta(seconds=1100)).expired == 1
    assert world.storage.websub_subscription(topic, callback) is None
    world.publish("paper", "p1", "Kelvar floods after Storm Orla")
    world.ingest()
    hub.story_changed([story])
    assert hub.run_once(start + timedelta(seconds=1200)).delivered == 0
    assert subscriber.posts == []


def test_an_expired_lease_gets_no_pending_delivery(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    failing = Subscriber(post_status=500)
    server.route("/failing", failing)
    start = datetime.now(UTC)
    _subscribed(
        client, hub, story_topic(story), server.url("/failing"), start, **{"hub.lease_seconds": "120"}
    )
    world.publish("paper", "p1", "Kelvar floods after Storm Orla")
    world.ingest()
    hub.story_changed([story])
    assert hub.run_once(start).retried == 1
    report = hub.run_once(start + timedelta(seconds=121))  # the retry would be due, the lease is over
    assert (report.expired, report.retried, report.dropped) == (1, 0, 0)
    assert len(failing.posts) == 1


def test_a_private_callback_is_never_called_when_not_allowed(
    hub_settings: Settings, storage: Storage, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    # Subscribed while private addresses were allowed; the setting changed since.
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    client = create_app(hub_settings, storage).test_client()
    with Hub(hub_settings, storage) as lenient:
        _subscribed(client, lenient, story_topic(story), server.url("/cb"), datetime.now(UTC))
    world.publish("paper", "p1", "Kelvar floods after Storm Orla")
    world.ingest()
    with Hub(hub_settings.replace(allow_private=False), storage) as strict:
        strict.story_changed([story])
        assert strict.run_once().retried == 1
    (delivery,) = storage.websub_due_deliveries(datetime.now(UTC) + timedelta(hours=1))
    assert "private address 127.0.0.1" in (delivery.last_error or "")
    assert subscriber.posts == []


def test_the_worker_thread_distributes_within_seconds(
    hub_settings: Settings, storage: Storage, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    settings = hub_settings.replace(websub_poll_seconds=0.2)
    app = create_app(settings, storage)
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    running = Hub(settings, storage)
    app.extensions["websub"] = running  # the endpoint wakes it
    running.start()
    try:
        status, _ = subscribe(app.test_client(), story_topic(story), server.url("/cb"))
        assert status == 202
        deadline = time.monotonic() + 10
        while storage.websub_subscription(story_topic(story), server.url("/cb")) is None:
            assert time.monotonic() < deadline, "the subscription was not verified"
            time.sleep(0.05)
        world.publish("paper", "p1", "Kelvar floods after Storm Orla")
        world.ingest()
        changed = time.monotonic()
        running.story_changed([story])
        assert subscriber.arrived.wait(10), "no content distribution arrived"
        assert time.monotonic() - changed < 5
        assert b"Kelvar floods after Storm Orla" in subscriber.posts[0].body
    finally:
        running.stop(timeout=10)
    assert not any(thread.name.startswith("websub") for thread in threading.enumerate())


# --------------------------------------------------------------------------- storage, both databases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    made = Storage(url)
    made.upgrade()
    yield made
    made.close()


def test_storage_keeps_requests_subscriptions_and_deliveries(store: Storage) -> None:
    topic, callback = f"{BASE}/stories/7/feed.atom", "https://r.example/cb?" + "x" * 2000
    args = {
        "topic": topic,
        "callback": callback,
        "secret": "s",
        "lease_seconds": 600,
        "story_id": 7,
        "max_pending": 2,
    }
    store.websub_add_request(mode="subscribe", now=T0, **args)  # type: ignore[arg-type]
    second = store.websub_add_request(mode="subscribe", now=T0, **args)  # type: ignore[arg-type]
    (waiting,) = store.websub_requests()
    assert waiting.id == second and waiting.callback == callback
    store.websub_add_request(mode="subscribe", now=T0, **{**args, "topic": f"{BASE}/feed.atom"})  # type: ignore[arg-type]
    with pytest.raises(Exception, match="waiting for verification"):
        store.websub_add_request(mode="subscribe", now=T0, **{**args, "topic": f"{BASE}/feed.rss"})  # type: ignore[arg-type]
    assert store.websub_take_request(waiting.id) and not store.websub_take_request(waiting.id)

    sub, new = store.websub_activate(waiting, now=T0, expires_at=T0 + timedelta(seconds=600), version="v1")
    assert new and (sub.version, sub.pending, sub.story_id) == ("v1", False, 7)
    renewed, new = store.websub_activate(
        waiting, now=T0, expires_at=T0 + timedelta(seconds=900), version="v2"
    )
    assert not new and renewed.id == sub.id and renewed.version == "v1"  # what it was sent is kept

    assert [s.id for s in store.websub_active(T0, story_ids=[7], river=False)] == [sub.id]
    assert store.websub_active(T0, story_ids=[8], river=True) == []
    assert store.websub_enqueue([sub.id, sub.id, 999], now=T0) == 1
    assert store.websub_enqueue([sub.id], now=T0) == 0  # one pending delivery per subscription
    assert store.websub_active(T0)[0].pending
    (delivery,) = store.websub_due_deliveries(T0)
    assert store.websub_claim_delivery(delivery, now=T0, until=T0 + timedelta(seconds=60))
    assert not store.websub_claim_delivery(delivery, now=T0, until=T0 + timedelta(seconds=60))  # taken
    assert store.websub_due_deliveries(T0) == []
    store.websub_retry(delivery, attempts=1, due_at=T0 + timedelta(seconds=30), error="HTTP 500")
    (again,) = store.websub_due_deliveries(T0 + timedelta(seconds=30))
    assert (again.attempts, again.last_error) == (1, "HTTP 500")
    store.websub_delivered(again, version="v3", now=T0)
    after = store.websub_subscription(topic, callback)
    assert after is not None and (after.version, after.delivered_at, after.pending) == ("v3", T0, False)

    assert store.websub_expire(T0 + timedelta(seconds=899)) == []
    assert [s.id for s in store.websub_expire(T0 + timedelta(seconds=900))] == [sub.id]
    assert store.websub_counts() == {"subscriptions": 0, "requests": 1, "deliveries": 0}


def test_a_topic_that_lost_its_content_is_dropped_once(
    client: FlaskClient, hub: Hub, world: World, server: FeedServer, subscriber: Subscriber
) -> None:
    story = world.story_of("Storm Orla breaches Kelvar harbour wall")
    _subscribed(client, hub, story_topic(story), server.url("/cb"), datetime.now(UTC))
    # Retention removes the story's only article, and the story with it.
    world.storage.purge_before(datetime(2100, 1, 1, tzinfo=UTC), now=datetime.now(UTC), tombstone_days=30)
    assert world.storage.story_record(story) is None
    hub.story_changed([story])
    assert hub.run_once().dropped == 1
    with Hub(world.settings, world.storage) as restarted:  # a restart compares every subscription
        report = restarted.run_once()
    assert (report.queued, report.dropped) == (0, 0)
    assert subscriber.posts == []
