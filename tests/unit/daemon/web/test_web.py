"""The web app against a real index: authentication on every route, the worklist's filters, sort
and pages over 10,000 cases, radiologist readings (validated, audited, re-scoring), health and
metrics. The browser test with real scoring is tests/integration/test_worklist_browser.py."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.testclient import TestClient

from daemon.cases import CaseState
from daemon.index import Index
from daemon.settings import load_settings
from daemon.web.app import WebContext, create_app
from daemon.web.auth import COOKIE, PUBLIC_PATHS
from daemon.web.queries import orthanc_study_id
from daemon.web.server import WebServer
from tests.conftest import free_port
from tests.unit.daemon.web.web_data import STATES, seed_cases

TOKEN = "s3cret-token-for-tests-0123456789"  # noqa: S105 (a test token)
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Seeded:
    """An index holding ``cases`` synthetic cases and the app over it."""

    index: Index
    client: TestClient
    context: WebContext
    wakes: list[float] = field(default_factory=list)


def _app(tmp_path: Path, patients: int, listener_ok: bool = True, **web: object) -> Seeded:
    index = Index(tmp_path / "index.sqlite3")
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    seed_cases(db, patients)
    db.close()
    settings = load_settings(
        storage={"data_dir": tmp_path},
        web={"token": TOKEN, "viewer_url": "http://pacs/app/explorer.html#study?uuid="
             "{orthanc_study_id}", **web},
        broker={"url": f"redis://127.0.0.1:{free_port()}/0"},  # nothing listens there
    )  # fmt: skip
    seeded = Seeded(index, None, None)  # type: ignore[arg-type]
    seeded.context = WebContext(
        index, settings, listener_ok=lambda: listener_ok,
        wake=lambda: seeded.wakes.append(time.time()), model_label="larc 1.0",
        cr_features=("post_mwt_mm",),
    )  # fmt: skip
    seeded.client = TestClient(create_app(seeded.context))
    return seeded


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Seeded]:
    seeded = _app(tmp_path, 14)
    yield seeded
    seeded.index.close()


def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


def test_every_route_but_sign_in_answers_401_without_credentials(small: Seeded) -> None:
    app = small.client.app
    routes = [r for r in app.routes if isinstance(r, APIRoute | Route)]  # type: ignore[attr-defined]
    walked = 0
    for route in routes:
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            url = _concrete(route.path)
            bare = small.client.request(method, url, follow_redirects=False)
            if route.path in PUBLIC_PATHS:
                assert bare.status_code != 401, (method, url)
                continue
            walked += 1
            assert bare.status_code == 401, (method, url, bare.status_code)
            assert bare.headers["www-authenticate"].startswith("Bearer")
            assert "DOE" not in bare.text
            assert "P000" not in bare.text
            wrong = small.client.request(
                method, url, headers={"Authorization": "Bearer wrong-token-0123456789"}
            )
            assert wrong.status_code == 401, (method, url)
            forged = small.client.request(
                method, url, headers={"Cookie": f"{COOKIE}=ZHIueA==.0000"}, follow_redirects=False
            )
            assert forged.status_code == 401, (method, url)
    assert walked >= 12  # pages, API, openapi, health, metrics, logout, readings
    assert small.client.get("/api/cases", headers=BEARER).status_code == 200
    page = small.client.get("/", follow_redirects=False)
    assert "Sign in" in page.text  # a browser is sent to the sign-in page


def test_sign_in_sets_a_session_the_pages_accept_and_sign_out_ends_it(small: Seeded) -> None:
    refused = small.client.post("/login", data={"token": "nope", "name": "Dr A"})
    assert refused.status_code == 401
    assert COOKIE not in small.client.cookies
    signed = small.client.post(
        "/login", data={"token": TOKEN, "name": "Dr A", "next": "/?state=failed"},
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303
    assert signed.headers["location"] == "/?state=failed"
    assert TOKEN not in signed.headers["set-cookie"]
    page = small.client.get("/?state=failed")
    assert page.status_code == 200
    assert "signed in as" in page.text
    assert "Dr A" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert small.client.post("/logout", follow_redirects=False).status_code == 303
    small.client.cookies.clear()
    assert small.client.get("/").status_code == 401
    offsite = small.client.post(
        "/login", data={"token": TOKEN, "name": "Dr A", "next": "//evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert offsite.headers["location"] == "/"


def test_a_trusted_proxy_names_the_user_and_an_untrusted_client_cannot(tmp_path: Path) -> None:
    seeded = _app(tmp_path, 3, trusted_user_header="X-Remote-User")
    header = {"X-Remote-User": "dr.proxy"}
    assert seeded.client.get("/api/cases", headers=header).status_code == 401  # "testclient"
    proxied = TestClient(seeded.client.app, client=("127.0.0.1", 40000))
    page = proxied.get("/", headers=header)
    assert page.status_code == 200
    assert "dr.proxy" in page.text
    saved = proxied.put(
        "/api/cases/resp-0000000/readings", json={"values": {"post_crm": "1"}}, headers=header
    )
    assert saved.status_code == 200
    audit = seeded.index.query("SELECT who, via FROM reading_audit")
    assert [tuple(r) for r in audit] == [("dr.proxy", "proxy")]
    seeded.index.close()


def test_worklist_filters_sorts_and_pages_10000_cases(tmp_path: Path) -> None:
    seeded = _app(tmp_path, 5000)
    client = seeded.client
    first = client.get("/api/cases", params={"page_size": 50}, headers=BEARER).json()
    assert (first["total"], len(first["items"]), first["pages"]) == (10_000, 50, 200)
    assert sum(first["counts"].values()) == 10_000
    last = client.get("/api/cases", params={"page": 200}, headers=BEARER).json()
    assert len(last["items"]) == 50
    ids = {r["case_id"] for r in first["items"]} | {r["case_id"] for r in last["items"]}
    assert len(ids) == 100  # pages do not overlap

    failed = client.get("/api/cases", params={"state": "failed"}, headers=BEARER).json()
    expected_failed = 2 * sum(1 for n in range(5000) if STATES[n % len(STATES)] == "failed")
    assert failed["total"] == expected_failed
    assert all(r["state"] == "failed" for r in failed["items"])

    high = client.get("/api/cases", params={"risk_group": "high", "page_size": 500},
                      headers=BEARER).json()  # fmt: skip
    exported = [n for n in range(5000) if STATES[n % len(STATES)] == "exported"]
    assert high["total"] == sum(1 for n in exported if n % 3 == 0)
    assert all(r["scores"]["risk_group"] == "high" for r in high["items"])

    one = client.get("/api/cases", params={"patient": "P0001234"}, headers=BEARER).json()
    assert {r["patient_id"] for r in one["items"]} == {"P0001234"}
    assert one["total"] == 2
    assert one["items"][0]["patient_name"] == "DOE^JANE1234"
    assert one["items"][0]["timepoints"] == ["baseline", "restaging"]

    dated = client.get(
        "/api/cases",
        params={"date_from": "2025-03-01", "date_to": "2025-03-31", "kind": "response"},
        headers=BEARER,
    ).json()
    assert dated["total"] == sum(1 for n in range(5000) if n % 12 == 2)
    assert all(r["restaging_date"].startswith("2025-03") for r in dated["items"])

    ranked = client.get(
        "/api/cases", params={"sort": "p_good", "order": "desc", "kind": "response"},
        headers=BEARER,
    ).json()["items"]  # fmt: skip
    values = [r["scores"]["p_good_fdl"] for r in ranked]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(96 / 97)

    for bad in ({"sort": "patient_name; DROP TABLE cases"}, {"state": "lost"},
                {"date_from": "01/02/2025"}, {"page": 0}):  # fmt: skip
        answer = client.get("/api/cases", params=bad, headers=BEARER)
        assert answer.status_code == 400, bad
        assert "use" in answer.json()["detail"]
    html = client.get("/", params={"state": "exported", "page": 3}, headers=BEARER)
    assert html.status_code == 200
    assert html.text.count('<tr data-case="') == 50
    assert "page 3 of" in html.text
    seeded.index.close()


def test_readings_are_checked_audited_and_make_a_scored_case_score_again(small: Seeded) -> None:
    client, index = small.client, small.index
    url = "/api/cases/resp-0000000/readings"  # an exported response case
    headers = {**BEARER, "X-Larc-User": "dr.radiologist"}
    before = index.query("SELECT * FROM cases WHERE case_id = 'resp-0000000'")[0]

    refused = client.put(url, json={"values": {"post_mwt_mm": "12 mm"}}, headers=headers)
    assert refused.status_code == 422
    assert "Restaging maximal wall thickness" in refused.json()["detail"]
    for bad in ({"post_crm": "maybe"}, {"post_mwt_mm": "-3"}, {"favourite_colour": "1"}):
        assert client.put(url, json={"values": bad}, headers=headers).status_code == 422
    assert index.query("SELECT COUNT(*) AS n FROM reading_audit")[0]["n"] == 0

    saved = client.put(url, json={"values": {"post_mwt_mm": "8.5", "post_crm": "1"}},
                       headers=headers).json()  # fmt: skip
    assert (saved["version"], saved["rescoring"]) == (2, True)
    assert {c["field"] for c in saved["changes"]} == {"post_mwt_mm", "post_crm"}
    after = index.query("SELECT * FROM cases WHERE case_id = 'resp-0000000'")[0]
    assert (after["version"], after["state"]) == (2, "ready")
    assert after["fingerprint"] != before["fingerprint"]  # a new work key: a new SR
    assert "post_mwt_mm - -> 8.5" in after["reason"]
    assert len(small.wakes) == 1  # the dispatcher was told
    assert index.readings("resp-0000000") == {"post_mwt_mm": "8.5", "post_crm": "1"}

    same = client.put(url, json={"values": {"post_mwt_mm": "8.5"}}, headers=headers).json()
    assert (same["version"], same["rescoring"], same["changes"]) == (2, False, [])
    for state in ("queued", "running", "done", "exported"):  # scored and sent, as larc does
        index.set_case_state("resp-0000000", 2, CaseState(state), state)
    cleared = client.put(url, json={"values": {"post_mwt_mm": ""}}, headers=headers).json()
    assert cleared["version"] == 3
    assert index.readings("resp-0000000") == {"post_crm": "1"}
    audit = index.query(
        "SELECT case_version, field, old_value, new_value, who, via FROM reading_audit ORDER BY id"
    )
    assert [tuple(a) for a in audit] == [
        (2, "post_crm", None, "1", "dr.radiologist", "token"),
        (2, "post_mwt_mm", None, "8.5", "dr.radiologist", "token"),
        (3, "post_mwt_mm", "8.5", None, "dr.radiologist", "token"),
    ]
    history = [
        h["version"]
        for h in index.query(
            "SELECT version FROM case_history WHERE case_id = 'resp-0000000' AND state = 'ready'"
        )
    ]
    assert history == [2, 3]  # fmt: skip

    waiting = "resp-0000003"  # STATES[3]: a case still waiting keeps its version
    kept = client.put(f"/api/cases/{waiting}/readings", json={"values": {"post_crm": "0"}},
                      headers=headers).json()  # fmt: skip
    assert (kept["version"], kept["rescoring"]) == (1, False)
    assert index.query("SELECT state FROM cases WHERE case_id = ?", (waiting,))[0][0] == "waiting"
    assert client.put("/api/cases/none-1/readings", json={"values": {}},
                      headers=headers).status_code == 404  # fmt: skip


def test_the_readings_form_saves_with_the_signed_in_name(small: Seeded) -> None:
    client = small.client
    client.post("/login", data={"token": TOKEN, "name": "Dr Form"})
    page = client.get("/cases/resp-0000000")
    assert page.status_code == 200
    assert 'name="post_mwt_mm"' in page.text
    assert "used by the CR/CRD model" in page.text
    viewer = "http://pacs/app/explorer.html#study?uuid=" + orthanc_study_id("P0000000", "1.2.3.0.1")
    assert viewer in page.text
    bad = client.post("/cases/resp-0000000/readings", data={"post_mwt_mm": "thick"})
    assert bad.status_code == 422
    assert "is not a number" in bad.text
    assert 'value="thick"' in bad.text
    done = client.post(
        "/cases/resp-0000000/readings", data={"post_mwt_mm": "7", "post_crm": "0", "age": ""},
        follow_redirects=False,
    )  # fmt: skip
    assert done.status_code == 303
    assert done.headers["location"] == "/cases/resp-0000000?saved=1"
    shown = client.get(done.headers["location"]).text
    assert "Readings saved" in shown
    assert "Dr Form" in shown
    assert {r["who"] for r in small.index.query("SELECT who FROM reading_audit")} == {"Dr Form"}
    assert client.get("/cases/none-1").status_code == 404


def test_a_held_case_is_resolved_on_its_page_and_through_the_api(small: Seeded) -> None:
    client, index = small.client, small.index
    held = "resp-0000003"  # its patient's studies: 1.2.3.3.1 (2024) and 1.2.3.3.2 (2025)
    db = sqlite3.connect(index.path)
    db.execute("UPDATE cases SET state = 'held', reason = 'timepoints conflict: the 2025 study "
               "is labelled baseline' WHERE patient_id = 'P0000003'")  # fmt: skip
    db.commit()
    db.close()
    client.post("/login", data={"token": TOKEN, "name": "Dr Pair"})
    page = client.get(f"/cases/{held}").text
    assert "On hold: choose the timepoints" in page
    assert 'id="tp-baseline"' in page

    kept = client.put(f"/api/cases/{held}/readings", json={"values": {"post_crm": "0"}},
                      headers=BEARER).json()  # fmt: skip
    assert kept["rescoring"] is False  # readings never release a held case
    url = f"/api/cases/{held}/timepoints"
    reversed_ = client.put(url, headers=BEARER, json={
        "baseline_study_uid": "1.2.3.3.2", "restaging_study_uid": "1.2.3.3.1"})  # fmt: skip
    assert reversed_.status_code == 422
    assert "must be dated after the baseline" in reversed_.json()["detail"]
    foreign = client.put(url, headers=BEARER, json={"baseline_study_uid": "1.2.3.4.1"})
    assert foreign.status_code == 422
    assert index.timepoint_choices("P0000003") == []

    form = {"baseline": "1.2.3.3.1", "restaging": "1.2.3.3.2", "note": "checked the dates"}
    done = client.post(f"/cases/{held}/timepoints", follow_redirects=False, data=form)
    assert done.status_code == 303
    shown = client.get(done.headers["location"]).text
    assert "Timepoints recorded" in shown
    assert "checked the dates" in shown
    choice = index.timepoint_choice("P0000003")
    assert choice is not None
    assert (choice.baseline_study_uid, choice.restaging_study_uid, choice.who) == (
        "1.2.3.3.1", "1.2.3.3.2", "Dr Pair")  # fmt: skip
    assert index.take_new_choices() == ["P0000003"]  # what the assembler applies next
    api = client.put(url, headers={**BEARER, "X-Larc-User": "dr.api"},
                     json={"baseline_study_uid": None}).json()  # fmt: skip
    assert api["recorded"] is True
    assert set(api["patient_cases"]) == {held, "base-0000003"}
    assert index.timepoint_choice("P0000003") is None  # back to larc's rules
    assert client.put("/api/cases/none-1/timepoints", headers=BEARER,
                      json={"baseline_study_uid": None}).status_code == 404  # fmt: skip


def test_metrics_count_from_the_index_and_health_names_what_fails(tmp_path: Path) -> None:
    seeded = _app(tmp_path, 14, listener_ok=False)
    index = seeded.index
    index.record_rejection("SCANNER", "1.2.3", "4.5.6", 0xA900, "wrong tags")
    index.set_case_state("resp-0000003", 1, "ready", "inputs complete")
    text = seeded.client.get("/metrics", headers=BEARER).text
    counts = {
        (r["kind"], r["state"]): r["n"]
        for r in index.query("SELECT kind, state, COUNT(*) AS n FROM cases GROUP BY kind, state")
    }
    for (kind, state), n in counts.items():
        assert f'larc_cases{{kind="{kind}",state="{state}"}} {float(n)}' in text
    assert 'larc_instances_rejected_total{status="0xA900"} 1.0' in text
    ready_or_queued = sum(n for (_, s), n in counts.items() if s in ("ready", "queued"))
    assert f'larc_queue_depth{{queue="daemon"}} {float(ready_or_queued)}' in text
    assert 'larc_stage_seconds_count{stage="scoring"}' in text
    # storage commitment: one export waiting for it, one committed; neither is a failed try
    index.record_result(
        {"work_key": "k9", "case_id": "resp-0000003", "version": 1, "study_uid": "1",
         "sr_sop_uid": "2", "sr_series_uid": "3", "scores": "{}", "files": "results/a.dcm"},
        ["PACS", "PACS2"],
    )  # fmt: skip
    ids = [r["id"] for r in index.query("SELECT id FROM exports WHERE work_key = 'k9' ORDER BY id")]
    index.await_commitment(ids[0], 1, "1.2", 1e12, wait=True)
    index.await_commitment(ids[1], 1, "1.3", 1e12, wait=True)
    index.record_committed(ids[1], "PACS2")
    text = seeded.client.get("/metrics", headers=BEARER).text
    assert 'larc_exports_commitment_pending{destination="PACS"} 1.0' in text
    assert 'larc_exports_commitment_pending{destination="PACS2"} 0.0' in text
    assert 'larc_exports_committed{destination="PACS2"} 1.0' in text
    assert 'larc_export_failures_total{destination="PACS"} 0.0' in text
    page = seeded.client.get("/cases/resp-0000003", headers=BEARER).text
    assert "sent, commitment pending" in page
    assert "committed by PACS2" in page

    health = seeded.client.get("/healthz", headers=BEARER)
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "failing"
    assert set(body["failing"]) == {"daemon", "broker"}
    assert body["checks"]["index"]["ok"] is True
    assert body["checks"]["pacs"]["ok"] is None  # none configured
    index.close()


def test_openapi_documents_every_api_route(small: Seeded) -> None:
    spec = small.client.get("/api/openapi.json", headers=BEARER).json()
    paths = set(spec["paths"])
    assert {"/api/cases", "/api/cases/{case_id}", "/api/cases/{case_id}/readings",
            "/api/cases/{case_id}/images/{sop_uid}.png", "/api/reading-fields", "/healthz",
            "/metrics"} <= paths  # fmt: skip
    assert "CaseRow" in spec["components"]["schemas"]
    fields = small.client.get("/api/reading-fields", headers=BEARER).json()
    used = [f["name"] for f in fields if f["used_by_model"]]
    assert used == ["post_mwt_mm"]
    detail = small.client.get("/api/cases/resp-0000000", headers=BEARER).json()
    assert detail["studies"][0]["viewer_url"].endswith(orthanc_study_id("P0000000", "1.2.3.0.1"))


def test_names_as_sent_are_shown_as_text_never_as_markup(tmp_path: Path) -> None:
    seeded = _app(tmp_path, 2)
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.execute("UPDATE patients SET patient_name = '<script>alert(1)</script>^X'")
    db.commit()
    db.close()
    for url in ("/", "/cases/resp-0000000"):
        page = seeded.client.get(url, headers=BEARER)
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "script-src 'none'" in page.headers["content-security-policy"]
    seeded.index.close()


def test_a_taken_port_stops_the_web_server_with_a_clear_error(small: Seeded) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = WebServer(small.client.app, "127.0.0.1", taken.getsockname()[1])  # type: ignore[arg-type]
        taken_port = r"could not listen on 127\.0\.0\.1:\d+ \(Address already in use\)"
        with pytest.raises(OSError, match=taken_port):
            server.start(timeout_s=10)
    free = WebServer(small.client.app, "127.0.0.1", 0)  # type: ignore[arg-type]
    free.start()
    try:
        with socket.create_connection(("127.0.0.1", free.port), timeout=5):
            pass  # it listens
    finally:
        free.stop()
