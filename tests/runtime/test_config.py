from datetime import timedelta
from pathlib import Path

import pytest

from collector.config import Config, ConfigError, config_from_dict, load_config, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_file_equals_defaults() -> None:
    assert load_config(ROOT / "config" / "main.yaml") == Config()


def test_retention_defaults() -> None:
    periods = Config().retention.periods()
    assert periods["trades"] == timedelta(days=7)
    assert periods["candles_30m"] == timedelta(days=365)
    assert periods["candles_1d"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"monitoring": {"health_check_port": "x"}}, "monitoring.health_check_port: Expected `int`, got `str`"),
        ({"monitoring": {"health_check_port": 70000}}, "monitoring.health_check_port"),
        ({"collection": {"data_types": ["trades", "orderbook"]}}, "collection.data_types[1]"),
        ({"logging": {"levl": "INFO"}}, "unknown field `levl`"),
        ({"retention": {"trades": "7 days"}}, "retention.trades: expected a duration"),
        ({"filters": {"trades": {"tier_multipliers": [2, 1]}}}, "filters.trades.tier_multipliers: expected 4 values"),
        ({"exchange": {"rest_url": "http://127.0.0.1:1"}}, "exchange: give both rest_url and ws_url"),
        ({"exchange": {"rest_url": "ftp://x", "ws_url": "ws://127.0.0.1:1"}}, "REST endpoint must be an http(s) URL"),
        ({"database": {"password": "a", "password_env": "B"}}, "give only one of password"),
        ({"collection": {"symbols": ["btc-usdt"]}}, "collection.symbols: not a symbol name of any venue"),
        ([1, 2], "expected a mapping"),
        ({"monitoring": {"heartbeat_timeout_s": 5}}, "monitoring.heartbeat_timeout_s: Expected `float` >= 10"),
    ],
)
def test_bad_config_names_the_field(raw: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "main.yaml")
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("main.yaml: ")


def test_broken_yaml_reports_line(tmp_path: Path) -> None:
    p = tmp_path / "main.yaml"
    p.write_text("database:\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_password_sources_and_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-file\n")
    cfg = config_from_dict({"database": {"host": "db", "password_file": str(secret)}})
    assert cfg.database.resolve_password() == "s3cret-file"
    assert "s3cret" not in repr(cfg.database) and "s3cret" not in repr(cfg)
    monkeypatch.setenv("COLLECTOR_PW", "from-env")
    assert config_from_dict({"database": {"password_env": "COLLECTOR_PW"}}).database.resolve_password() == "from-env"
    with pytest.raises(ConfigError, match="NOPE_PW is not set"):
        config_from_dict({"database": {"password_env": "NOPE_PW"}}).database.resolve_password()


def test_durations() -> None:
    assert parse_duration("90m", "x") == timedelta(minutes=90)
    assert parse_duration(30, "x") == timedelta(seconds=30)
    assert parse_duration("forever", "x") is None
    with pytest.raises(ValueError, match="x: duration must be positive"):
        parse_duration(0, "x")


def test_explicit_endpoints_win() -> None:
    cfg = config_from_dict({"exchange": {"rest_url": "http://127.0.0.1:9443/", "ws_url": "ws://127.0.0.1:9443"}})
    ep = cfg.exchange.endpoints()
    assert (ep.rest, ep.ws) == ("http://127.0.0.1:9443", "ws://127.0.0.1:9443")


@pytest.mark.parametrize("exchanges", [["binance", "bybit"], ["bybit", "binance"], ["binance", "okx", "bybit"]])
def test_venues_that_share_symbol_names_are_accepted(exchanges: list[str]) -> None:
    """Binance and Bybit both name their perpetuals BTCUSDT; the supervisor keys them apart (symbol_keys)."""
    assert config_from_dict({"collection": {"exchanges": exchanges}}, "main.yaml").collection.exchanges == exchanges


@pytest.mark.parametrize(
    ("exchanges", "expected"),
    [
        (["binance", "kraken"], "main.yaml: collection.exchanges: unknown exchange 'kraken' (choose from binance, okx, bybit)"),
        (["okx", "bybit", "okx"], "main.yaml: collection.exchanges: 'okx' is listed twice"),
        ([], "main.yaml: collection.exchanges: at least one exchange is needed"),
        (["OKX"], "main.yaml: collection.exchanges: unknown exchange 'OKX'"),
        (["binance", "bybit", "binance"], "main.yaml: collection.exchanges: 'binance' is listed twice"),
    ],
)
def test_bad_exchanges_name_the_key(exchanges: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"collection": {"exchanges": exchanges}}, "main.yaml")
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_exchanges_default_and_venue_endpoints() -> None:
    cfg = config_from_dict({}, "main.yaml")
    assert cfg.collection.exchanges == ["binance"]
    assert cfg.exchange.venue_endpoints("okx").ws == "wss://ws.okx.com:8443"
    cfg = config_from_dict({"collection": {"exchanges": ["bybit", "okx"]},
                            "exchange": {"okx": {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/"}}})
    assert cfg.collection.exchanges == ["bybit", "okx"]
    assert (cfg.exchange.venue_endpoints("okx").rest, cfg.exchange.venue_endpoints("okx").ws) == \
           ("http://127.0.0.1:1", "ws://127.0.0.1:1")
    assert cfg.exchange.venue_endpoints("bybit").rest == "https://api.bybit.com"
    with pytest.raises(ConfigError, match=r"^main.yaml: exchange.bybit: exchange WebSocket endpoint must be"):
        config_from_dict({"exchange": {"bybit": {"rest_url": "http://x", "ws_url": "http://x"}}}, "main.yaml")


def test_okx_symbols_are_accepted_in_the_config() -> None:
    cfg = config_from_dict({"collection": {"symbols": ["BTC-USDT-SWAP", "BTCUSDT"]}})
    assert cfg.collection.symbols == ["BTC-USDT-SWAP", "BTCUSDT"]
