"""OPML import and export."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.models import Feed
from aggregator.opml import OPMLError, build_opml, parse_opml
from tests.conftest import NOW

DOC = b"""<?xml version="1.0"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="World">
    <outline text="Wire" title="The Wire" type="rss" xmlUrl="https://wire.example/rss"/>
    <outline text="Europe"><outline text="EU" xmlUrl="https://eu.example/atom"/></outline>
  </outline>
  <outline text="Local file" xmlUrl="local.xml"/>
  <outline text="dup" xmlUrl="https://wire.example/rss"/>
</body></opml>"""


def test_parse_keeps_folders_and_resolves_relative_urls(tmp_path: Path) -> None:
    subs = parse_opml(DOC, base_dir=tmp_path)
    assert [(s.url, s.title, s.folder) for s in subs] == [
        ("https://wire.example/rss", "The Wire", "World"),
        ("https://eu.example/atom", "EU", "World / Europe"),
        (str(tmp_path / "local.xml"), "Local file", None),
    ]


@pytest.mark.parametrize(
    "data",
    [b"", b"<html><body/></html>", b"<opml version='2.0'></opml>", b"<!DOCTYPE x [<!ENTITY a 'b'>]><opml/>"],
)
def test_bad_documents_are_refused(data: bytes) -> None:
    with pytest.raises(OPMLError):
        parse_opml(data)


def test_export_round_trips() -> None:
    def feed(i: int, url: str, folder: str | None) -> Feed:
        return Feed(i, url, f"Feed {i}", None, folder, NOW, None, None, None, None, NOW, 0, None)

    feeds = [feed(1, "https://a.example/rss", "World / Europe"), feed(2, "https://b.example/rss", None)]
    again = parse_opml(build_opml(feeds, now=NOW))
    assert [(s.url, s.title, s.folder) for s in again] == [
        ("https://a.example/rss", "Feed 1", "World / Europe"),
        ("https://b.example/rss", "Feed 2", None),
    ]
