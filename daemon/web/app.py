"""The web app: worklist and case pages (HTML), the same data as JSON under ``/api``, the
sign-in page, ``/healthz`` and ``/metrics``. Every route but ``/login`` needs authentication
(see :mod:`daemon.web.auth`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import pydicom
from fastapi import Body, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from daemon import __version__
from daemon.index import Index
from daemon.settings import Settings
from daemon.web import models
from daemon.web.auth import COOKIE, PUBLIC_PATHS, Authenticator, User
from daemon.web.monitor import Health, IndexCollector
from daemon.web.outlines import OutlineError, case_outlines, outline_png
from daemon.web.queries import (
    KINDS,
    RISK_GROUPS,
    STATES,
    QueryError,
    WorklistQuery,
    case_detail,
    image_path,
    worklist,
)
from daemon.web.readings import FIELDS, ReadingError, clean

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
_API_PREFIXES = ("/api/", "/healthz", "/metrics")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",  # pages hold patient data
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
        "script-src 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
}


@dataclass
class WebContext:
    """What the web app needs of the running daemon."""

    index: Index
    settings: Settings
    listener_ok: Callable[[], bool]
    wake: Callable[[], None] | None = None  # the dispatcher: look for ready cases now
    model_label: str | None = None
    cr_features: tuple[str, ...] = ()  # the bundle's CR features (marked on the form)


def _user(request: Request) -> User:
    user: User = request.state.user
    return user


def create_app(context: WebContext) -> FastAPI:
    """The app for one daemon."""
    settings = context.settings
    data_dir = settings.storage.data_dir
    auth = Authenticator(settings.web)
    health = Health(context.index, settings, context.listener_ok)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(context.index, settings))
    templates = Jinja2Templates(directory=TEMPLATES)
    app = FastAPI(
        title="larc",
        version=__version__,
        description=(
            "Worklist, case details, scores and radiologist readings of larc (research use "
            "only - not for diagnostic decisions). Authenticate with 'Authorization: Bearer "
            "<web.token>' (optionally naming yourself in X-Larc-User for the audit), or through "
            "the reverse proxy's user header."
        ),
        docs_url=None,  # Swagger UI would load its scripts from the internet
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path not in PUBLIC_PATHS:
            user = auth.user(
                {k.lower(): v for k, v in request.headers.items()},
                dict(request.cookies),
                request.client.host if request.client else None,
            )
            if user is None:
                response = _unauthorized(request)
                response.headers.update(_SECURITY_HEADERS)
                return response
            request.state.user = user
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    def _unauthorized(request: Request) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="larc"'}
        if request.url.path.startswith(_API_PREFIXES) or request.method != "GET":
            return JSONResponse(
                {"detail": "authentication required: send 'Authorization: Bearer <web.token>'"},
                status_code=401,
                headers=headers,
            )
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return templates.TemplateResponse(
            request, "unauthorized.html", {"next": target}, status_code=401, headers=headers
        )

    def render(request: Request, name: str, values: dict[str, Any], status: int = 200) -> Response:
        values = {
            "user": _user(request),
            "model_label": context.model_label,
            "version": __version__,
            **values,
        }
        return templates.TemplateResponse(request, name, values, status_code=status)

    # -- sign-in -------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        return templates.TemplateResponse(
            request, "login.html", {"next": next, "token_auth": auth.token is not None}
        )

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        token: Annotated[str, Form()],
        name: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        name = name.strip()
        if not auth.token_ok(token) or not name:
            logger.warning("web sign-in refused from %s", request.client.host if request.client
                           else "?")  # fmt: skip
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": next, "token_auth": True, "error": "Wrong token, or no name given."},
                status_code=401,
            )
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, auth.session_cookie(name), httponly=True, samesite="strict", path="/"
        )
        logger.info("web sign-in by %s", name)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- worklist ------------------------------------------------------------------------------

    def _query(
        state: str | None,
        kind: str | None,
        risk_group: str | None,
        date_from: str | None,
        date_to: str | None,
        patient: str | None,
        sort: str,
        order: str,
        page: int,
        page_size: int | None,
    ) -> WorklistQuery:
        query = WorklistQuery(
            state or None, kind or None, risk_group or None, date_from or None, date_to or None,
            patient or None, sort, order, page, page_size or settings.web.page_size,
        )  # fmt: skip
        try:
            query.check()
        except QueryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return query

    @app.get("/api/cases", response_model=models.WorklistPage, tags=["worklist"])
    def api_worklist(
        state: str | None = None,
        kind: str | None = None,
        risk_group: str | None = None,
        date_from: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
        date_to: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
        patient: Annotated[str | None, Query(description="patient id or part of it")] = None,
        sort: str = "updated",
        order: str = "desc",
        page: int = 1,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """One page of cases. Filters: state, kind, DM risk group, study date range (the
        case's latest study), patient id; sort by patient, kind, state, study_date, received,
        scored, p_good, risk or updated."""
        query = _query(state, kind, risk_group, date_from, date_to, patient, sort, order, page,
                       page_size)  # fmt: skip
        return worklist(context.index, query)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def worklist_page(
        request: Request,
        state: str | None = None,
        kind: str | None = None,
        risk_group: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        patient: str | None = None,
        sort: str = "updated",
        order: str = "desc",
        page: int = 1,
    ) -> Response:
        query = _query(state, kind, risk_group, date_from, date_to, patient, sort, order, page,
                       None)  # fmt: skip
        found = worklist(context.index, query)
        filters = {
            "state": state or "", "kind": kind or "", "risk_group": risk_group or "",
            "date_from": date_from or "", "date_to": date_to or "", "patient": patient or "",
        }  # fmt: skip

        def link(**changes: Any) -> str:
            values = {**filters, "sort": sort, "order": order, "page": page, **changes}
            return "/?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})

        return render(
            request,
            "worklist.html",
            {
                "found": found, "filters": filters, "sort": sort, "order": order, "link": link,
                "states": STATES, "kinds": KINDS, "risk_groups": RISK_GROUPS,
            },
        )  # fmt: skip

    # -- case ----------------------------------------------------------------------------------

    def _detail(case_id: str) -> dict[str, Any]:
        detail = case_detail(context.index, data_dir, case_id, settings.web.viewer_url)
        if detail is None:
            raise HTTPException(status_code=404, detail=f"no case {case_id}")
        return detail

    def _fields() -> list[dict[str, Any]]:
        return [
            {
                "name": f.name, "label": f.label, "unit": f.unit,
                "choices": [v for v, _ in f.choices], "labels": dict(f.choices),
                "low": f.low, "high": f.high, "used_by_model": f.name in context.cr_features,
            }
            for f in FIELDS
        ]  # fmt: skip

    @app.get("/api/cases/{case_id}", response_model=models.CaseDetail, tags=["cases"])
    def api_case(case_id: str) -> dict[str, Any]:
        """A case: its studies and series (roles and reasons), results (scores, the SR's
        numbers, heat-map images, exports), history, readings and their audit."""
        return _detail(case_id)

    @app.get("/cases/{case_id}", response_class=HTMLResponse, include_in_schema=False)
    def case_page(
        request: Request, case_id: str, saved: int = 0, chosen: int = 0, reviewed: int = 0
    ) -> Response:
        return _case_page(
            request, case_id, saved=bool(saved), chosen=bool(chosen), reviewed=bool(reviewed)
        )

    def _case_page(request: Request, case_id: str, status: int = 200, **values: Any) -> Response:
        """The case page; ``values``: saved/chosen/reviewed notices, a form's error and
        entries."""
        shown = {"saved": False, "chosen": False, "reviewed": False, "error": None, **values}
        return render(
            request, "case.html", {"case": _detail(case_id), "fields": _fields(), **shown},
            status=status,
        )  # fmt: skip

    @app.get(
        "/api/cases/{case_id}/images/{sop_uid}.png",
        tags=["cases"],
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def api_image(case_id: str, sop_uid: str) -> Response:
        """A heat-map Secondary Capture of the case as PNG."""
        path = image_path(context.index, data_dir, case_id, sop_uid)
        if path is None or not path.is_file():
            raise HTTPException(status_code=404, detail="no such image in this case's results")
        pixels = pydicom.dcmread(path).pixel_array
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    # -- automatic outlines --------------------------------------------------------------------

    def _outline(case_id: str, series_uid: str) -> dict[str, Any]:
        case = context.index.case(case_id)
        if case is None:
            raise HTTPException(status_code=404, detail=f"no case {case_id}")
        for found in case_outlines(context.index, case.inputs, case.kind):
            if found["image_series_uid"] == series_uid:
                return found
        raise HTTPException(
            status_code=404, detail=f"case {case_id} has no automatic outline on {series_uid}"
        )

    @app.get(
        "/api/cases/{case_id}/outlines/{series_uid}.png",
        tags=["cases"],
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def api_outline(
        case_id: str,
        series_uid: str,
        sequence: Annotated[str, Query(description="t2w, or dwi (carried to its b-high)")] = "t2w",
    ) -> Response:
        """An automatic tumour outline drawn over the slice it covers most, as PNG."""
        found = _outline(case_id, series_uid)
        try:
            png = outline_png(context.index, found, sequence)
        except OutlineError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        return Response(png, media_type="image/png")

    def review(
        case_id: str, series_uid: str, body: models.OutlineReviewIn, user: User
    ) -> dict[str, Any]:
        _outline(case_id, series_uid)
        try:
            context.index.review_auto_mask(
                series_uid, body.decision, user.name, user.via, body.note.strip()
            )
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        logger.info(
            "case %s: automatic outline on series %s %s by %s", case_id, series_uid,
            body.decision, user.name,
        )  # fmt: skip
        return {
            "case_id": case_id, "image_series_uid": series_uid, "decision": body.decision,
            "recorded": True,
        }  # fmt: skip

    @app.put(
        "/api/cases/{case_id}/outlines/{series_uid}",
        response_model=models.OutlineReviewResult,
        tags=["cases"],
    )
    def api_review(
        request: Request,
        case_id: str,
        series_uid: str,
        body: Annotated[models.OutlineReviewIn, Body()],
    ) -> dict[str, Any]:
        """Accept or reject an automatic tumour outline (audited). larc serve decides the
        patient's cases again within seconds: accepted, the new SR records who reviewed it;
        rejected, the case waits for a drawn RTSTRUCT or SEG."""
        return review(case_id, series_uid, body, _user(request))

    @app.post("/cases/{case_id}/outlines/{series_uid}", include_in_schema=False)
    async def form_review(request: Request, case_id: str, series_uid: str) -> Response:
        form = await request.form()
        body = models.OutlineReviewIn(
            decision=str(form.get("decision", "")), note=str(form.get("note", ""))
        )
        try:
            review(case_id, series_uid, body, _user(request))
        except HTTPException as exc:
            if exc.status_code != 422:
                raise
            return _case_page(request, case_id, 422, error=exc.detail)
        return RedirectResponse(f"/cases/{quote(case_id)}?reviewed=1", status_code=303)

    # -- readings ------------------------------------------------------------------------------

    def save(case_id: str, values: dict[str, str], user: User) -> dict[str, Any]:
        try:
            cleaned = clean(values)
        except ReadingError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        try:
            saved = context.index.save_readings(case_id, cleaned, user.name, user.via)
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=f"no case {case_id}") from exc
        if saved.changes:
            logger.info(
                "case %s: readings changed by %s (%s)%s", case_id, user.name,
                ", ".join(n for n, _, _ in saved.changes),
                f", re-scoring as version {saved.version}" if saved.rescore else "",
            )  # fmt: skip
        if saved.rescore and context.wake is not None:
            context.wake()
        return {
            "case_id": case_id,
            "version": saved.version,
            "rescoring": saved.rescore,
            "changes": [{"field": n, "old_value": o, "new_value": v} for n, o, v in saved.changes],
        }

    @app.get("/api/reading-fields", response_model=list[models.ReadingFieldOut], tags=["readings"])
    def api_fields() -> list[dict[str, Any]]:
        """The radiologist-read values a case can be given, with allowed values."""
        return _fields()

    @app.put("/api/cases/{case_id}/readings", response_model=models.ReadingsOut,
             tags=["readings"])  # fmt: skip
    def api_save(
        request: Request, case_id: str, body: Annotated[models.ReadingsIn, Body()]
    ) -> dict[str, Any]:
        """Store radiologist-read values (audited). A case already scored is re-scored as a
        new version; its new SR supersedes the previous one."""
        return save(case_id, body.values, _user(request))

    @app.post("/cases/{case_id}/readings", include_in_schema=False)
    async def form_save(request: Request, case_id: str) -> Response:
        form = await request.form()
        values = {f.name: str(form.get(f.name, "")) for f in FIELDS if f.name in form}
        try:
            save(case_id, values, _user(request))
        except HTTPException as exc:
            if exc.status_code != 422:
                raise
            return _case_page(request, case_id, 422, error=exc.detail, entered=values)
        return RedirectResponse(f"/cases/{quote(case_id)}?saved=1", status_code=303)

    # -- timepoints ----------------------------------------------------------------------------

    def choose(case_id: str, body: models.TimepointsIn, user: User) -> dict[str, Any]:
        case = context.index.case(case_id)
        if case is None:
            raise HTTPException(status_code=404, detail=f"no case {case_id}")
        try:
            context.index.choose_timepoints(
                case.patient_id, body.baseline_study_uid or None,
                body.restaging_study_uid or None, user.name, user.via, body.note.strip(),
            )  # fmt: skip
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        logger.info("case %s: timepoints chosen by %s", case_id, user.name)
        return {
            "case_id": case_id,
            "patient_cases": [c.case_id for c in context.index.cases(patient_id=case.patient_id)],
            "recorded": True,
        }

    @app.put("/api/cases/{case_id}/timepoints", response_model=models.TimepointsOut,
             tags=["cases"])  # fmt: skip
    def api_choose(
        request: Request, case_id: str, body: Annotated[models.TimepointsIn, Body()]
    ) -> dict[str, Any]:
        """Choose the patient's baseline and restaging studies by hand (audited): how a case
        held for conflicting timepoints is resolved. larc serve pairs the patient's cases again
        within seconds, as new versions; the restaging must be dated after the baseline."""
        return choose(case_id, body, _user(request))

    @app.post("/cases/{case_id}/timepoints", include_in_schema=False)
    async def form_choose(request: Request, case_id: str) -> Response:
        form = await request.form()
        body = models.TimepointsIn(
            baseline_study_uid=str(form.get("baseline", "")) or None,
            restaging_study_uid=str(form.get("restaging", "")) or None,
            note=str(form.get("note", "")),
        )
        try:
            choose(case_id, body, _user(request))
        except HTTPException as exc:
            if exc.status_code != 422:
                raise
            return _case_page(request, case_id, 422, error=exc.detail)
        return RedirectResponse(f"/cases/{quote(case_id)}?chosen=1", status_code=303)

    # -- operations ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        """The daemon's listener, the index, the broker and the PACS (C-ECHO, cached 30 s);
        503 when one is failing."""
        found = health.check()
        return JSONResponse(found, status_code=200 if found["status"] == "ok" else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text format)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
