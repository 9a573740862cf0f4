"""Configuration: YAML + environment + flags, errors that name the key, secure defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.export.destinations import destination_name, dicomweb_node
from daemon.settings import (
    ConfigError,
    Destination,
    StowDestination,
    load_settings,
    reference_markdown,
)
from dicom_io.dicomweb import DicomWebNode


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


def test_destinations_are_c_store_nodes_or_stow_rs_servers(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text(
        "export:\n  destinations:\n"
        "    - {ae_title: ORTHANC, host: 127.0.0.1, port: 4242, read_back: true}\n"
        "    - url: https://cloud.example.org/dicom-web/\n"
        "      auth: {bearer_token: abc-token}\n"
        "      tls: {ca_file: /etc/larc/ca.pem}\n"
        "pacs:\n  dicomweb: {url: http://pacs:8042/dicom-web}\n"
    )
    settings = load_settings(config)
    cstore, stow = settings.export.destinations
    assert isinstance(cstore, Destination)
    assert cstore.read_back
    assert isinstance(stow, StowDestination)
    assert stow.url == "https://cloud.example.org/dicom-web"
    assert stow.read_back
    assert destination_name(stow) == "https://cloud.example.org/dicom-web"
    session = dicomweb_node(stow).client()._session
    assert session.headers["Authorization"] == "Bearer abc-token"
    assert session.verify == "/etc/larc/ca.pem"
    assert settings.pacs.prior_source == "dicomweb"  # no AE title: priors over DICOMweb
    assert DicomWebNode(url="http://user:pw@h:1/dw").name == "http://h:1/dw"  # no credentials


@pytest.mark.parametrize(
    ("yaml", "needle"),
    [
        ("export:\n  destinations:\n    - {url: ftp://x}\n", "not an http:// or https:// URL"),
        (
            "export:\n  destinations:\n    - {url: 'http://x', auth: {username: u}}\n",
            "basic auth needs both username and password",
        ),
        (
            "export:\n  destinations:\n    - {ae_title: P, host: h, port: 1, read_back: true, "
            "commitment: required}\n",
            "read_back confirms a node that has no storage commitment",
        ),
        ("pacs:\n  prior_retrieval: dicomweb\n", "set pacs.dicomweb.url"),
    ],
)
def test_bad_destinations_and_prior_sources_are_named(
    tmp_path: Path, yaml: str, needle: str
) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text(yaml)
    with pytest.raises(ConfigError, match=needle):
        load_settings(config)


def test_a_dicomweb_password_is_never_echoed_in_an_error(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text(
        "export:\n  destinations:\n    - {url: 'http://x', auth: {password: hunter2-secret}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "hunter2-secret" not in str(caught.value)
