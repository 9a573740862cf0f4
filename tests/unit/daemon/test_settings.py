"""Configuration: YAML + environment + flags, errors that name the key, secure defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.settings import ConfigError, load_settings, reference_markdown


def test_defaults_are_a_loopback_listener_on_11112() -> None:
    settings = load_settings()
    assert settings.scp.port == 11112
    assert settings.scp.bind_address == "127.0.0.1"
    assert settings.scp.loopback_only
    settings.check_secure()


def test_flags_override_environment_which_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text("scp:\n  port: 4000\n  ae_title: FROMFILE\nassembly:\n  stable_age_s: 5\n")
    monkeypatch.setenv("LARC_SCP__PORT", "5000")
    settings = load_settings(config, scp={"ae_title": "FROMFLAG"})
    assert settings.scp.port == 5000
    assert settings.scp.ae_title == "FROMFLAG"
    assert settings.assembly.stable_age_s == 5


def test_errors_name_every_bad_key_and_its_variable(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text("scp:\n  port: 70000\n  ae_title: WAY_TOO_LONG_AE_TITLE\n  prot: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "scp.port" in message
    assert "LARC_SCP__PORT" in message
    assert "scp.ae_title" in message
    assert "scp.prot" in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_network_listener_without_allow_list_is_refused() -> None:
    settings = load_settings(scp={"bind_address": "0.0.0.0"})  # noqa: S104
    with pytest.raises(ConfigError, match="allowed_callers"):
        settings.check_secure()
    allowed = load_settings(
        scp={"bind_address": "0.0.0.0", "allowed_callers": [{"ae_title": "PACS"}]}  # noqa: S104
    )
    allowed.check_secure()


def test_allowed_caller_host_must_be_an_address_or_network() -> None:
    with pytest.raises(ConfigError, match="allowed_callers"):
        load_settings(scp={"allowed_callers": [{"ae_title": "PACS", "host": "pacs.example"}]})


def test_configuration_reference_in_docs_is_current() -> None:
    committed = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    assert committed.rstrip() == reference_markdown().rstrip(), (
        "docs/configuration.md is stale: run `larc config reference > docs/configuration.md`"
    )


def test_every_setting_is_documented() -> None:
    text = reference_markdown()
    for key in ("scp.port", "scp.tls.cert_file", "storage.duplicate_policy", "log.level"):
        assert f"`{key}`" in text


def test_a_bad_secret_is_named_but_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LARC_WEB__TOKEN", "tooshort-secret")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "web.token" in str(raised.value)
    assert "LARC_WEB__TOKEN" in str(raised.value)
    assert "tooshort-secret" not in str(raised.value)


def test_web_settings_check_the_viewer_link_and_the_proxies() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder \{study\}"):
        load_settings(web={"viewer_url": "http://pacs/?s={study}"})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(web={"trusted_proxies": ["the-proxy"]})
    assert not load_settings().web.authenticated  # no token, no header: the app stays off
    assert load_settings(web={"trusted_user_header": "X-Remote-User"}).web.authenticated
