"""larc's configuration: one YAML file plus environment overrides, validated at start.

Precedence, highest first: command-line flags, environment variables (prefix ``LARC_``, nested
sections joined with ``__``, e.g. ``LARC_SCP__PORT=11112``), the YAML file, the defaults here.
Load it once in the entry point with :func:`load_settings` and pass it down.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from dicom_io.pairing import PairingPolicy
from dicom_io.storage import Watermark

_AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]*[\x21-\x5b\x5d-\x7e])?$")
Port = Annotated[int, Field(ge=1, le=65535)]


def validate_ae_title(value: str) -> str:
    """An AE title: 1-16 printable ASCII characters, no backslash, no leading/trailing space."""
    if not 1 <= len(value) <= 16 or not _AE_TITLE.match(value):
        raise ValueError(
            f"{value!r} is not a valid AE title: use 1-16 printable ASCII characters, "
            "no backslash, no leading or trailing spaces"
        )
    return value


def validate_ip_address(value: str) -> str:
    """An IPv4 or IPv6 address to listen on."""
    ipaddress.ip_address(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowedCaller(_Section):
    """A calling AE title allowed to associate, optionally only from one host or network."""

    ae_title: str
    host: str | None = Field(
        default=None, description="IP address or CIDR network the caller must connect from."
    )

    _check_ae = field_validator("ae_title")(validate_ae_title)

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)
        return value


class TlsSettings(_Section):
    """TLS for the DICOM listener. Off unless certificate and key are given."""

    cert_file: Path | None = Field(default=None, description="PEM certificate of the listener.")
    key_file: Path | None = Field(default=None, description="PEM private key of the listener.")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle; when set, clients must present a certificate."
    )

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured."""
        return self.cert_file is not None

    def server_context(self) -> ssl.SSLContext | None:
        """The listener's server-side TLS context, or ``None`` when TLS is off."""
        if not self.enabled:
            return None
        if self.key_file is None or self.cert_file is None:
            raise ValueError("scp.tls needs both cert_file and key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file is not None:
            context.load_verify_locations(self.ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class ScpSettings(_Section):
    """The DICOM listener (C-ECHO, C-STORE)."""

    ae_title: str = Field(default="LARC", description="Our AE title (called AE the PACS uses).")
    bind_address: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: Port = Field(default=11112, description="TCP port to listen on.")
    max_associations: int = Field(default=10, ge=1, le=200, description="Concurrent associations.")
    max_pdu: int = Field(
        default=262_144, ge=0, description="Largest PDU we accept, bytes (0: unlimited)."
    )
    allowed_callers: tuple[AllowedCaller, ...] = Field(
        default=(),
        description=(
            "Calling AE titles (optionally with host) allowed to associate. Empty: anyone, but "
            "only while bound to a loopback address."
        ),
    )
    tls: TlsSettings = TlsSettings()
    listener_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Processes receiving on the port (SO_REUSEPORT, Linux): the kernel spreads "
            "associations over them, each stores and indexes as the main one does. More than 1 "
            "lets several senders at once use several cores; one association is served by one "
            "process. Not with storage commitment destinations (their reports must reach the "
            "main process)."
        ),
    )

    _check_ae = field_validator("ae_title")(validate_ae_title)

    _check_address = field_validator("bind_address")(validate_ip_address)

    @property
    def loopback_only(self) -> bool:
        """Whether the listener is reachable from this machine only."""
        return ipaddress.ip_address(self.bind_address).is_loopback


class StorageSettings(_Section):
    """Where received instances and the index live."""

    data_dir: Path = Field(
        default=Path("larc-data"), description="Storage root: instances and the SQLite index."
    )
    duplicate_policy: Literal["keep_newest", "keep_first", "reject"] = Field(
        default="keep_newest",
        description=(
            "A SOP Instance UID received again with different content: keep the newest copy, "
            "keep the first, or refuse the new one. Both are recorded in the audit table."
        ),
    )
    min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        description=(
            "Free space (bytes) the storage's file system must keep. Below it (or below "
            "min_free_percent) new instances are refused with 0xA700 Out of Resources, "
            "/healthz fails its storage check and larc_storage_accepting is 0; storing "
            "resumes by itself when space returns. The index and results still need room."
        ),
    )
    min_free_percent: float = Field(
        default=0.0,
        ge=0,
        lt=100,
        description="Free space (percent of the file system) that must stay; 0: not used.",
    )

    def watermark(self) -> Watermark:
        """The free-space rule for the storage root."""
        return Watermark(self.data_dir, self.min_free_bytes, self.min_free_percent)


class AssemblySettings(_Section):
    """When a study counts as complete."""

    stable_age_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without new instances after which a study is stable.",
    )


class PairingSettings(_Section):
    """How a patient's studies become baseline and restaging."""

    restaging_pattern: str = Field(
        default=r"re-?stag|post.?(treat|therapy|chemo|crt|nct)|response",
        description=(
            "Regex (case-insensitive) on ClinicalTrialTimePointID, else StudyDescription, "
            "marking a restaging study."
        ),
    )
    baseline_pattern: str = Field(
        default=r"baseline|pre.?(treat|therapy)|(?<!re)staging",
        description=(
            "Regex (case-insensitive) on ClinicalTrialTimePointID, else StudyDescription, "
            "marking a baseline study."
        ),
    )
    other_pattern: str = Field(
        default=r"mid.?(treat|therapy|course|crt|way)|interim|follow.?up|surveillance|recurren",
        description=(
            "Regex (case-insensitive) on ClinicalTrialTimePointID, else StudyDescription, "
            "marking a study that is neither baseline nor restaging (mid-treatment, "
            "follow-up); checked before the other two. Empty: none."
        ),
    )
    min_interval_days: int = Field(
        default=21, ge=0, description="Shortest gap between baseline and restaging."
    )
    max_interval_days: int = Field(
        default=200, ge=1, description="Longest gap between baseline and restaging."
    )

    @field_validator("restaging_pattern", "baseline_pattern", "other_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    def policy(self) -> PairingPolicy:
        """These settings as the pairing code takes them."""
        return PairingPolicy(
            self.restaging_pattern,
            self.baseline_pattern,
            self.min_interval_days,
            self.max_interval_days,
            self.other_pattern,
        )


class RolesSettings(_Section):
    """Series-role rules."""

    rules_file: Path | None = Field(
        default=None,
        description="YAML list of role rules replacing the built-in ones (see README).",
    )


class HttpTlsSettings(_Section):
    """TLS for an https:// DICOMweb server (used whenever its URL is https)."""

    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the server [default: system]."
    )
    verify: bool = Field(
        default=True,
        description="Verify the server's certificate (turn off only for a test server).",
    )
    cert_file: Path | None = Field(
        default=None, description="PEM client certificate, when the server asks for one."
    )
    key_file: Path | None = Field(default=None, description="PEM key of the client certificate.")


class DicomWebAuth(_Section):
    """How larc signs in to a DICOMweb server: a bearer token, or basic auth (user name and
    password), or neither."""

    bearer_token: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer <token>'."
    )
    username: str | None = Field(default=None, description="Basic auth user name.")
    password: SecretStr | None = Field(default=None, description="Basic auth password.")

    @model_validator(mode="after")
    def _one_way(self) -> DicomWebAuth:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give bearer_token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


def validate_http_url(value: str) -> str:
    """An http:// or https:// URL with a host, without a trailing slash."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


class DicomWebServer(_Section):
    """A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS under one root URL)."""

    url: str = Field(description="The DICOMweb root, e.g. https://pacs.example.org/dicom-web.")
    auth: DicomWebAuth = DicomWebAuth()
    tls: HttpTlsSettings = HttpTlsSettings()
    timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one HTTP request.")

    _check_url = field_validator("url")(validate_http_url)


class PacsSettings(_Section):
    """The PACS we query for priors and send results to."""

    ae_title: str | None = Field(default=None, description="The PACS's AE title.")
    host: str | None = Field(default=None, description="The PACS's host name or address.")
    port: Port | None = Field(default=None, description="The PACS's DICOM port.")
    dicomweb: DicomWebServer | None = Field(
        default=None,
        description=(
            "The PACS's DICOMweb root ({url, auth, tls, timeout_s}), for prior retrieval over "
            "QIDO-RS and WADO-RS when it offers no C-FIND/C-MOVE to larc."
        ),
    )
    prior_retrieval: Literal["auto", "dimse", "dicomweb", "off"] = Field(
        default="auto",
        description=(
            "How priors are fetched: dimse (C-FIND + C-MOVE to scp.ae_title), dicomweb "
            "(QIDO-RS + WADO-RS), off, or auto: dimse when ae_title, host and port are set, "
            "else dicomweb when pacs.dicomweb is set, else off."
        ),
    )

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, value: str | None) -> str | None:
        return None if value is None else validate_ae_title(value)

    @property
    def dimse_node_set(self) -> bool:
        """Whether the PACS's AE title, host and port are all set."""
        return self.ae_title is not None and self.host is not None and self.port is not None

    @property
    def prior_source(self) -> Literal["dimse", "dicomweb", "off"]:
        """How priors are fetched, with ``auto`` resolved."""
        if self.prior_retrieval != "auto":
            return self.prior_retrieval
        if self.dimse_node_set:
            return "dimse"
        return "dicomweb" if self.dicomweb is not None else "off"

    @model_validator(mode="after")
    def _retrieval_possible(self) -> PacsSettings:
        if self.prior_retrieval == "dimse" and not self.dimse_node_set:
            raise ValueError("prior_retrieval is dimse: set pacs.ae_title, host and port")
        if self.prior_retrieval == "dicomweb" and self.dicomweb is None:
            raise ValueError("prior_retrieval is dicomweb: set pacs.dicomweb.url")
        return self


class BrokerSettings(_Section):
    """The Celery broker. Unset: the embedded default (worker threads inside ``larc serve``)."""

    url: SecretStr | None = Field(
        default=None,
        description=(
            "Broker URL, e.g. redis://redis-host:6379/0. Unset: no broker, cases are scored by "
            "worker threads in larc serve (one machine, no Redis)."
        ),
    )
    result_backend: SecretStr | None = Field(
        default=None, description="Celery result backend URL [default: the broker URL]."
    )
    visibility_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Seconds before a task taken by a worker that died is given to another worker "
            "(Redis); must exceed workers.task_time_limit_s."
        ),
    )


class WorkerSettings(_Section):
    """How cases are scored: worker threads (embedded) or Celery workers (with a broker)."""

    embedded_threads: int = Field(
        default=1, ge=1, le=16, description="Scoring threads in larc serve without a broker."
    )
    task_time_limit_s: float = Field(
        default=900.0, gt=0, description="A task running longer is killed and fails."
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a task after a transient fault."
    )
    retry_backoff_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait between two retries (exponential backoff)."
    )
    prepare_processes: int = Field(
        default=1,
        ge=1,
        le=32,
        description=(
            "Cases whose inputs larc serve prepares at once (N4, masks, crops: seconds of CPU "
            "per case), each in a process of a pool; 1: one at a time in the dispatch thread. "
            "Up to the daemon machine's cores; workers never read the storage, so preparing "
            "stays on the machine that holds it."
        ),
    )
    lease_s: float = Field(
        default=1800.0,
        gt=0,
        description=(
            "A case queued or running for longer than this when larc serve starts is queued "
            "again (its worker is presumed lost)."
        ),
    )


class ModelSettings(_Section):
    """The model bundle cases are scored with."""

    bundle_dir: Path | None = Field(
        default=None,
        description=(
            "Model bundle folder (from larc train models). Unset: cases are assembled but not "
            "scored. Workers and larc serve must use the same bundle."
        ),
    )


class ScoringSettings(_Section):
    """What a case's inputs must be before it is scored."""

    out_of_range: Literal["decline", "warn"] = Field(
        default="decline",
        description=(
            "A case whose inputs lie outside the bundle's training envelope (slice thickness, "
            "pixel spacing, matrix, orientation, b-values, vendor, field strength, tumour "
            "volume, intensities): decline (not scored, nothing sent, every reason shown) or "
            "warn (scored; the SR lists the warnings). A bundle without an envelope counts as "
            "outside."
        ),
    )
    envelope_margin: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description=(
            "How far past the training range a number may lie, as a fraction of the bound "
            "(0.1: a 5.0 mm maximum admits 5.5 mm)."
        ),
    )
    require_validated: bool = Field(
        default=True,
        description=(
            "Send only the outputs the bundle's validation backs (AUC or C-index with the "
            "lower bound of its 95 % CI above 0.5, on enough events: see the bundle's model "
            "card). Any other output is left out of the SR and the worklist, which say "
            "instead why (e.g. 'distant-metastasis risk: not available - this bundle's model "
            "showed no discrimination in validation (C-index 0.49, 95% CI 0.40-0.59, ...)'). "
            "false sends every output (research settings only)."
        ),
    )


class GateSettings(_Section):
    """Overrides of the quality gate an automatic mask must pass (unset: the bundle's own,
    set at training time from what the segmenter saw)."""

    min_volume_ml: float | None = Field(default=None, ge=0, description="Smallest tumour (ml).")
    max_volume_ml: float | None = Field(default=None, gt=0, description="Largest tumour (ml).")
    min_mean_probability: float | None = Field(
        default=None, ge=0, le=1, description="Lowest mean tumour probability inside the mask."
    )
    max_components: int | None = Field(
        default=None,
        ge=1,
        description="Most separate tumour regions (of at least 10 % of the largest).",
    )
    allow_edge: bool | None = Field(
        default=None, description="Whether the outline may touch the edge of the field of view."
    )
    max_dwi_lesion_ratio: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest size of the DWI-bright lesion an outline lies in, as a multiple of the "
            "outline (a larger one: part of the tumour missed); 0 turns the check off. "
            "Bundle default 2.0."
        ),
    )
    dwi_min_contrast: float | None = Field(
        default=None,
        gt=0,
        description=(
            "How many times brighter than the body on the high-b DWI an outline must be for "
            "the lesion check to apply (a tumour without restricted diffusion has no extent "
            "to compare). Bundle default 2.0."
        ),
    )

    def overrides(self) -> dict[str, float | int | bool]:
        """The limits set here (``pipeline.segmentation.GateLimits`` field names)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SegmentationSettings(_Section):
    """Automatic tumour segmentation (the bundle's segmenter) for studies without a drawn mask."""

    mode: Literal["manual", "auto_when_missing", "auto_always"] = Field(
        default="auto_when_missing",
        description=(
            "manual: a case waits for a drawn RTSTRUCT/SEG on the T2W; auto_when_missing: a T2W "
            "without a drawn mask is segmented by the bundle's segmenter, the mask is stored as "
            "a DICOM SEG (automatic, unreviewed) and scored on; a drawn mask that arrives later "
            "supersedes it (new case version); auto_always: every T2W is segmented and only "
            "automatic masks are scored. A bundle without a segmenter works as manual."
        ),
    )
    gate: GateSettings = GateSettings()
    series_number: int = Field(
        default=9100, ge=1, description="SeriesNumber of the automatic SEG series."
    )


class ClientTlsSettings(_Section):
    """TLS when larc connects to a destination. Off unless ``enabled``."""

    enabled: bool = Field(default=False, description="Use TLS for this destination.")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the destination [default: system]."
    )
    cert_file: Path | None = Field(
        default=None, description="PEM client certificate, when the destination asks for one."
    )
    key_file: Path | None = Field(default=None, description="PEM key of the client certificate.")


class Destination(_Section):
    """A DICOM node results are sent to with C-STORE."""

    ae_title: str
    host: str
    port: Port
    tls: ClientTlsSettings = ClientTlsSettings()
    commitment: Literal["required", "optional", "off"] = Field(
        default="off",
        description=(
            "Storage commitment (IHE RAD-10) after each C-STORE: required (the case is "
            "exported only once the node has committed every object; a failure or timeout is "
            "retried like a failed send), optional (asked and recorded, not waited for), off. "
            "The node answers on an association to this listener: it must know larc's AE "
            "title, host and port (e.g. Orthanc's DicomModalities)."
        ),
    )
    commitment_timeout_s: float = Field(
        default=300.0, gt=0, description="How long to wait for the commitment report."
    )
    read_back: bool = Field(
        default=False,
        description=(
            "After each send, ask the node with C-FIND (IMAGE level) for every instance sent; "
            "one it does not list is a failed try. For nodes without storage commitment "
            "(not with commitment: required)."
        ),
    )

    _check_ae = field_validator("ae_title")(validate_ae_title)

    @model_validator(mode="after")
    def _one_confirmation(self) -> Destination:
        if self.read_back and self.commitment == "required":
            raise ValueError(
                "read_back confirms a node that has no storage commitment: with commitment: "
                "required the commitment already confirms every object; set read_back: false"
            )
        return self


class StowDestination(DicomWebServer):
    """A DICOMweb server results are sent to with STOW-RS (multipart/related;
    type="application/dicom"), e.g. a cloud PACS."""

    read_back: bool = Field(
        default=True,
        description=(
            "After each send, ask the server with QIDO-RS for every instance sent; one it does "
            "not list is a failed try."
        ),
    )


def _destination_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "stow" if "url" in value else "dimse"
    return "stow" if isinstance(value, StowDestination) else "dimse"


AnyDestination = Annotated[
    Annotated[Destination, Tag("dimse")] | Annotated[StowDestination, Tag("stow")],
    Discriminator(_destination_kind),
]


class ExportSettings(_Section):
    """Where results (SR, heat-map Secondary Captures) go."""

    destinations: tuple[AnyDestination, ...] = Field(
        default=(),
        description=(
            "Where results go: DICOM nodes ({ae_title, host, port, ...}: C-STORE) and DICOMweb "
            "servers ({url, ...}: STOW-RS). Empty: results are written under "
            "<data_dir>/outbox/ (one file per SOP instance)."
        ),
    )
    max_attempts: int = Field(
        default=6, ge=1, le=50, description="Tries per destination before failed-export."
    )
    backoff_s: float = Field(
        default=10.0, gt=0, description="Wait after the first failed try; doubles each try."
    )
    backoff_max_s: float = Field(default=900.0, gt=0, description="Longest wait between tries.")
    manufacturer: str = Field(
        default="larc", description="Manufacturer written in the result objects."
    )


class WebSettings(_Section):
    """The web worklist and its JSON API (served by larc serve). Started only when a way to
    authenticate is configured: ``token``, or ``trusted_user_header`` behind a reverse proxy."""

    enabled: bool = Field(default=True, description="Serve the worklist (when auth is set up).")
    bind_address: str = Field(default="127.0.0.1", description="Address the web app listens on.")
    port: Port = Field(default=8470, description="TCP port of the web app (HTTP).")
    token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token for the API and the sign-in page (at least 16 characters). Send it as "
            "'Authorization: Bearer <token>'."
        ),
    )
    trusted_user_header: str | None = Field(
        default=None,
        description=(
            "Header naming the signed-in user, set by an authenticating reverse proxy (e.g. "
            "X-Remote-User). Trusted only from web.trusted_proxies."
        ),
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=("127.0.0.1/32", "::1/128"),
        description="Addresses or CIDR networks whose trusted_user_header is believed.",
    )
    viewer_url: str | None = Field(
        default=None,
        description=(
            "Link that opens a study in the PACS viewer; placeholders {study_uid}, "
            "{patient_id}, {accession_number}, {orthanc_study_id} (see docs/operations.md)."
        ),
    )
    page_size: int = Field(default=50, ge=5, le=500, description="Worklist rows per page.")

    _check_address = field_validator("bind_address")(validate_ip_address)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("web.token must be at least 16 characters")
        return value

    @field_validator("viewer_url")
    @classmethod
    def _check_viewer(cls, value: str | None) -> str | None:
        if value is not None:
            known = {"study_uid", "patient_id", "accession_number", "orthanc_study_id"}
            for name in re.findall(r"{([^{}]*)}", value):
                if name not in known:
                    raise ValueError(
                        f"unknown placeholder {{{name}}}; use {', '.join(sorted(known))}"
                    )
        return value

    @property
    def authenticated(self) -> bool:
        """Whether a way to sign in is configured (the app starts only then)."""
        return self.token is not None or self.trusted_user_header is not None


class LogSettings(_Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe level logged (overridden by --log-level)."
    )
    json_lines: bool = Field(
        default=False, description="JSON lines instead of plain text (or --log-json)."
    )


class Settings(BaseSettings):
    """All of larc's settings."""

    model_config = SettingsConfigDict(
        env_prefix="LARC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    scp: ScpSettings = ScpSettings()
    storage: StorageSettings = StorageSettings()
    assembly: AssemblySettings = AssemblySettings()
    pairing: PairingSettings = PairingSettings()
    roles: RolesSettings = RolesSettings()
    pacs: PacsSettings = PacsSettings()
    broker: BrokerSettings = BrokerSettings()
    workers: WorkerSettings = WorkerSettings()
    models: ModelSettings = ModelSettings()
    scoring: ScoringSettings = ScoringSettings()
    segmentation: SegmentationSettings = SegmentationSettings()
    export: ExportSettings = ExportSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()

    def check_secure(self) -> None:
        """Refuse a listener reachable from the network that anyone could store to."""
        if not self.scp.allowed_callers and not self.scp.loopback_only:
            raise ConfigError(
                f"scp.bind_address is {self.scp.bind_address}, reachable from the network, and "
                "scp.allowed_callers is empty: anyone could store to larc. List the PACS and "
                "scanners in scp.allowed_callers, or bind to 127.0.0.1."
            )


class ConfigError(ValueError):
    """The configuration is invalid; the message names the bad key and what to do."""


_SECRET_KEYS = frozenset({"web.token", "broker.url", "broker.result_backend"})
_SECRET_FIELDS = frozenset({"password", "bearer_token"})  # wherever they appear


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        env = "LARC_" + "__".join(str(p).upper() for p in item["loc"] if isinstance(p, str))
        got = item.get("input")
        secret = key in _SECRET_KEYS or str(item["loc"][-1]) in _SECRET_FIELDS
        shown = "" if isinstance(got, dict) or secret else f" (got {got!r})"
        lines.append(f"{key}: {item['msg']}{shown} [environment: {env}]")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (YAML), the environment and ``overrides`` (flags).

    ``overrides`` are nested dicts by section, e.g. ``scp={"port": 11112}``. Raises
    :class:`ConfigError` naming every bad key.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"configuration file {config_file} does not exist")

    class _Sources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(
                    YamlConfigSettingsSource(settings_cls, yaml_file=config_file, deep_merge=True)
                )
            return tuple(sources)

    try:
        return _Sources(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except (OSError, ValueError) as exc:  # unreadable file, YAML syntax
        raise ConfigError(f"cannot read configuration {config_file}: {exc}") from exc


def _default_text(value: Any) -> str:
    if isinstance(value, tuple | list) and not value:
        return "(none)"
    if value is None:
        return "(unset)"
    return f"`{value}`"


def reference_markdown() -> str:
    """The configuration reference (every setting, default, meaning), generated from the model."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `larc config reference` from the settings model; do not edit by hand.",
        "",
        "Settings come from a YAML file (`--config FILE` or `LARC_CONFIG`), then environment",
        "variables (`LARC_<SECTION>__<KEY>`, which win over the file), then `larc serve` flags",
        "(which win over both). Unknown keys are errors. `larc config check` validates and prints",
        "the result.",
        "",
    ]

    def walk(model: type[BaseModel], prefix: list[str]) -> None:
        rows = []
        nested = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((annotation, [*prefix, name]))
                continue
            key = ".".join([*prefix, name])
            env = "LARC_" + "__".join(p.upper() for p in [*prefix, name])
            doc = (field.description or "").replace("|", "/")
            rows.append(f"| `{key}` | {_default_text(field.default)} | `{env}` | {doc} |")
        if rows:
            title = ".".join(prefix)
            lines.extend(
                [
                    f"## `{title}`",
                    "",
                    (model.__doc__ or "").strip(),
                    "",
                    "| key | default | environment | meaning |",
                    "|---|---|---|---|",
                    *rows,
                    "",
                ]
            )
        for sub_model, sub_prefix in nested:
            walk(sub_model, sub_prefix)

    def item_rows(model: type[BaseModel], prefix: str) -> list[str]:
        rows = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                rows += item_rows(annotation, f"{prefix}{name}.")
                continue
            default = "(required)" if field.is_required() else _default_text(field.default)
            doc = (field.description or "").replace("|", "/")
            rows.append(f"| `{prefix}{name}` | {default} | {doc} |")
        return rows

    walk(Settings, [])
    lines += [
        "`scp.allowed_callers` is a list of `{ae_title, host}`; `host` is optional (an IP address",
        "or CIDR network). In the environment give it as JSON, e.g.",
        '`LARC_SCP__ALLOWED_CALLERS=\'[{"ae_title": "ORTHANC", "host": "10.0.0.5"}]\'`.',
        "",
        "`export.destinations` is a list; an entry with `url` is a DICOMweb server (STOW-RS),",
        "any other a DICOM node (C-STORE), e.g. in YAML:",
        "",
        "```yaml",
        "export:",
        "  destinations:",
        "    - {ae_title: ORTHANC, host: 10.0.0.5, port: 4242, commitment: required}",
        "    - url: https://cloud-pacs.example.org/dicom-web",
        "      auth: {username: larc, password: change-me}",
        "```",
        "",
    ]
    for model, title in (
        (Destination, "`export.destinations`: a DICOM node (C-STORE)"),
        (StowDestination, "`export.destinations`: a DICOMweb server (STOW-RS)"),
        (DicomWebServer, "`pacs.dicomweb`: priors over QIDO-RS and WADO-RS"),
    ):
        lines += [
            f"### {title}",
            "",
            "| key | default | meaning |",
            "|---|---|---|",
            *item_rows(model, ""),
            "",
        ]
    lines += [
        "Secrets (`broker.url`, `broker.result_backend`, `web.token`, DICOMweb `bearer_token` and",
        "`password`) are never printed by `larc config check`.",
        "",
    ]
    return "\n".join(lines)
