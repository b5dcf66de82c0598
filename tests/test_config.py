"""Settings: defaults, TOML file, environment, validation, and the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config
from aggregator.config import OPTIONS, ConfigError, Settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_option_table() -> None:
    defaults = Settings()
    for option in OPTIONS:
        assert getattr(defaults, option.name) == option.default_value(), option.name
    assert {o.name for o in OPTIONS} == set(Settings.__dataclass_fields__)


def test_default_database_is_a_sqlite_file_under_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert config.load(environ={}).database_url == f"sqlite:///{tmp_path}/aggregator/aggregator.db"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text('database_url = "sqlite:///from-file.db"\nport = 9000\n[aggregator]\nfetch_timeout = 5\n')
    env = {"AGGREGATOR_CONFIG": str(path), "AGGREGATOR_PORT": "9100", "AGGREGATOR_ALLOW_PRIVATE": "1"}
    settings = config.load(environ=env)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.port == 9100
    assert settings.fetch_timeout == 5.0
    assert settings.allow_private is True
    assert config.load(environ=env, port=9200).port == 9200


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGGREGATOR_PORT": "eighty"}, "bad value for port"),
        ({"AGGREGATOR_PORT": "-1"}, "must be positive"),
        ({"AGGREGATOR_ALLOW_PRIVATE": "maybe"}, "not a boolean"),
        ({"AGGREGATOR_LSH_THRESHOLD": "2"}, "between 0 and 1"),
        ({"AGGREGATOR_LSH_SCHEME": "md5"}, "unknown MinHash scheme"),
        ({"AGGREGATOR_MIN_INTERVAL": "100000"}, "min_interval must not exceed"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(environ=env)


def test_unknown_keys_and_missing_files_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("databse_url = 'typo'\n")
    with pytest.raises(ConfigError, match="unknown setting 'databse_url'"):
        config.load(path, environ={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml", environ={})
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(path, environ={})


def test_secrets_are_redacted() -> None:
    assert Settings(api_token="s3cret").redacted()["api_token"] == "***"


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings-table")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- /settings-table -->")].strip()
    assert table == config.markdown_table(), "regenerate README's table with `aggregator config --markdown`"
