"""One typed settings object for the whole product.

Every field is read from an environment variable named ``CALLSENSE_<FIELD>`` (upper case), e.g.
``CALLSENSE_KAFKA_BOOTSTRAP``. Each field has a default and a one-line doc; ``callsense config``
prints the effective values (secrets masked) and the README's configuration table is generated
from this class (``callsense config --markdown``). Secrets are only ever read from the
environment, never from files in the repository.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Role = Literal["customer", "agent", "unknown"]
ROLES: tuple[Role, ...] = ("customer", "agent", "unknown")

PACKAGE_DIR = Path(__file__).resolve().parent


def _default_model_dir() -> Path:
    """The shipped model's directory, located without importing the models package (settings
    sit below every other module)."""
    spec = find_spec("callsense.models")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]).resolve() / "artifacts" / "default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLSENSE_", extra="ignore")

    # --- infrastructure -------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the database; empty means SQLite at DATA_DIR/callsense.db.",
    )
    data_dir: Path = Field(
        Path("./var"), description="Directory for the SQLite file, broker data and worker state."
    )
    app_id: str = Field("callsense", description="Faust application id (consumer group).")
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of every callsense topic (= maximum number of workers)."
    )
    topic_replication: int = Field(
        1,
        ge=1,
        description="Replication factor of every callsense topic and the worker's changelog "
        "(3 on a three-node Kafka cluster).",
    )
    audio_retention_ms: int = Field(
        6 * 3600 * 1000, description="retention.ms set on audio topics when they are created."
    )

    # --- streaming (broker, worker state, batching) ---------------------------------------
    broker_kind: str = Field(
        "noida",
        description="Broker the demo starts and the worker talks to: noida (embedded, "
        "persistent), tansu (embedded, in memory) or kafka (Apache Kafka).",
    )
    kafka_home: Path | None = Field(
        None,
        description="Directory of the Apache Kafka jars (a distribution or the Maven cache); "
        "empty: ~/.cache/callsense/kafka-<version>, fetched by Maven on first use.",
    )
    stream_batch_events: int = Field(
        64, ge=1, description="Max audio events the worker processes as one micro-batch."
    )
    fetch_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="Longest time a worker's fetch may wait at the broker for new records "
        "(Faust fixes 1500 ms; a broker that answers a waiting fetch only when it expires adds "
        "up to this much latency per topic hop).",
    )
    state_checkpoint_ms: int = Field(
        2000,
        ge=0,
        description="Max interval between per-call state checkpoints; offsets are committed "
        "only up to the last checkpoint.",
    )
    state_retention_ms: int = Field(
        3600 * 1000, description="retention.ms of the worker's call-state changelog topic."
    )
    recording_retention_days: float = Field(
        0.0,
        ge=0.0,
        description="Keep each call's audio as a WAV for review (call page player) this many "
        "days; 0 keeps none. `callsense recordings purge` deletes older ones.",
    )
    live_conversation_s: float = Field(
        10.0,
        ge=0.0,
        description="Live conversation metrics (talk, silence, overtalk so far) go out every this "
        "many seconds of a call's audio; 0 turns them off (the final ones come at its end).",
    )
    call_idle_timeout_s: float = Field(
        60.0,
        ge=5.0,
        description="A call with no audio for this long ends as 'abandoned' (summary written, "
        "its alerts resolved), also when its producer died without a call_end.",
    )
    max_call_s: float = Field(
        4 * 3600.0,
        gt=0,
        description="Longest call analysed: audio past it is dead-lettered and the call ends as "
        "'truncated' (a line left open must not hold a worker for ever).",
    )
    max_chunk_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest audio chunk message accepted (4 s of 16 kHz stereo PCM16); larger "
        "ones are dead-lettered. A call's reorder buffer always holds at least one such chunk.",
    )
    max_calls_per_worker: int | None = Field(
        None,
        ge=1,
        description="Live calls one worker takes; a call_start beyond it is dead-lettered with "
        "the reason, and so is that call's audio (empty: no cap; size it with `callsense bench "
        "pipeline`).",
    )
    worker_instance_id: str | None = Field(
        None,
        description="Static consumer-group membership id of this worker (unique per worker, "
        "stable across its restarts): a restarted worker takes its place again without waiting "
        "for the group to drop it. Empty: none, except with noida, which never drops a killed "
        "worker from the group: there it is '<APP_ID>-worker' (noida serves one worker).",
    )
    worker_session_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Consumer-group session timeout: how soon a crashed worker's partitions "
        "are reassigned (a restarted worker waits for it).",
    )

    # --- audio / stages -------------------------------------------------------------------
    sample_rate: int = Field(16000, description="Internal sample rate of every stage (Hz).")
    chunk_ms: int = Field(250, ge=10, le=2000, description="Audio chunk length produced by ingest.")
    window_s: float = Field(3.0, gt=0.5, description="Emotion window length (seconds of speech).")
    hop_s: float = Field(1.0, gt=0.0, description="Hop between emotion windows (seconds).")
    noise_reduction: bool = Field(
        False, description="Spectral-gating noise reduction before VAD (see README: measured)."
    )
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad aggressiveness 0-3.")
    model_dir: Path = Field(
        default_factory=_default_model_dir,
        description="Directory of the emotion model artefacts (default: shipped model).",
    )
    model_int8: bool = Field(
        True,
        description="int8 dynamic quantisation of the encoder (meets 60 ms/window; same UA).",
    )
    model_threads: int = Field(1, ge=1, description="torch threads per inference executor.")
    inference_batch: int = Field(16, ge=1, description="Max windows per inference batch.")
    inference_max_wait_ms: int = Field(
        30,
        ge=0,
        description="Max time the worker gathers audio events into one micro-batch (its "
        "windows are inferred together, across calls).",
    )
    persist_max_wait_ms: int = Field(
        50,
        ge=1,
        description="Max time a window event waits for its database write batch to fill.",
    )
    uncertain_threshold: float = Field(
        0.45, ge=0.0, le=1.0, description="Below this calibrated confidence a window is uncertain."
    )
    smoothing_alpha: float = Field(
        0.5, gt=0.0, le=1.0, description="Exponential smoothing factor over recent windows."
    )
    agent_channel: int = Field(0, ge=0, le=1, description="Stereo channel that carries the agent.")
    emotion_roles: Annotated[tuple[Role, ...], NoDecode] = Field(
        ("customer",),
        description="Speaker roles whose emotion is inferred, comma separated: customer, agent, "
        "unknown. Default customer only: the EU AI Act (Art. 5(1)(f)) prohibits inferring "
        "employees' emotions at work; 'agent' is an opt-in the worker logs. Every role still "
        "gets VAD (talk time). 'unknown' = mono speakers without a role (diarization off or "
        "rule 'none'), which may be the agent.",
    )

    # --- diarization (mono calls) ---------------------------------------------------------
    diarization_mono: bool = Field(
        True,
        description="Diarize mono calls, in the stream worker and in offline analysis "
        "(analyze, upload page) alike: speakers 'spk0', 'spk1', ... with roles from "
        "CALLSENSE_DIARIZATION_AGENT_RULE. Off, a mono call is one speaker 'spk0' of unknown "
        "role.",
    )
    diarization_latency_s: float = Field(
        2.5,
        ge=1.0,
        le=5.0,
        description="Mono-call diarization latency: speaker labels are final "
        "this many seconds after the audio arrives (1-5 s; more = more accurate).",
    )
    diarization_step_s: float = Field(
        1.25,
        ge=0.1,
        le=5.0,
        description="Diarization re-analysis step (s, at most the latency; "
        "smaller = more compute).",
    )
    diarization_max_speakers: int = Field(
        2, ge=1, le=8, description="Maximum speakers per mono call."
    )
    diarization_delta_new: float = Field(
        0.3,
        gt=0.0,
        lt=2.0,
        description="Cosine distance to every known speaker above which a new speaker is opened.",
    )
    diarization_agent_rule: str = Field(
        "first",
        pattern="^(first|second|none)$",
        description="Mono-call roles: 'first' = the "
        "first speaker heard is the agent (inbound), 'second' = the second one (outbound), "
        "'none' = roles unknown.",
    )

    # --- telephony gateway (callsense gateway) ---------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(8765, description="Gateway WebSocket port.")
    gateway_token: SecretStr | None = Field(
        None,
        description="Bearer token the /stream endpoint requires (beyond loopback an "
        "endpoint without its credential refuses every client).",
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio auth token: when set, /twilio verifies X-Twilio-Signature."
    )
    gateway_public_url: str = Field(
        "",
        description="The gateway's URL as Twilio dials it (wss://host[:port]), for signature "
        "checks behind a proxy; empty: wss:// + the Host header.",
    )
    audiohook_api_key: SecretStr | None = Field(
        None, description="Genesys AudioHook: the X-API-KEY /audiohook requires."
    )
    audiohook_client_secret: SecretStr | None = Field(
        None,
        description="Genesys AudioHook client secret (base64): when set, /audiohook verifies "
        "the handshake's HTTP message signature.",
    )
    gateway_idle_s: float = Field(
        30.0, gt=0, description="A gateway socket that sends no frame for this long is closed."
    )
    gateway_resume_s: float = Field(
        30.0, ge=0, description="A dropped session's call resumes on a reconnect within this."
    )

    # --- dashboard / api / alerts ---------------------------------------------------------
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address.")
    dashboard_port: int = Field(8050, description="Dashboard port.")
    dashboard_threads: int = Field(
        8, ge=1, le=64, description="Request threads of the dashboard's WSGI server (waitress)."
    )
    dashboard_user: str = Field("supervisor", description="Sign-in user (beyond loopback).")
    dashboard_password: SecretStr | None = Field(
        None,
        description="Sign-in password; required when bound beyond loopback, and enforced "
        "wherever it is set (loopback too).",
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token required by the JSON API (/api/...)."
    )
    webhook_url: str = Field(
        "",
        description="Alert webhook endpoints, comma separated (optional #filter per URL).",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret (whsec_<base64> or raw) used to sign payloads."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook attempt.")
    webhook_max_attempts: int | None = Field(
        None,
        ge=1,
        description="Cap of webhook attempts per endpoint and hand-over (empty: none; the "
        "retry horizon decides; `callsense webhook test` makes 6).",
    )
    webhook_retry_horizon_s: float = Field(
        86400.0,
        gt=0,
        description="Webhook retries go on until this long after an event's first attempt "
        "(across worker restarts); then the event counts as not delivered.",
    )
    webhook_backoff_s: float = Field(
        0.5, ge=0, description="First retry delay; doubles per attempt, with jitter."
    )
    webhook_backoff_max_s: float = Field(60.0, ge=0, description="Cap of one retry delay.")
    alert_rules: str = Field(
        "",
        description="Alert rules as a JSON list (empty: customer_anger + negative_sustained, "
        "see docs/dashboard.md).",
    )
    dashboard_poll_ms: int = Field(
        1000, ge=200, le=1000, description="Dashboard refresh interval (data on screen <= 2 s)."
    )
    dashboard_users: SecretStr | None = Field(
        None,
        description="More sign-in users, comma separated name:role:hash (role supervisor, or "
        "analyst: read-only; hash from `callsense hash-password`). Set, sign-in is required.",
    )
    dashboard_secret_key: SecretStr | None = Field(
        None, description="Flask session key for sign-in cookies (random per process if unset)."
    )

    @field_validator("emotion_roles", mode="before")
    @classmethod
    def _split_roles(cls, v: object) -> object:
        if isinstance(v, str):
            parts = [p.strip().lower() for p in v.split(",") if p.strip()]
            unknown = sorted(set(parts) - set(ROLES))
            if unknown:
                raise ValueError(f"unknown role(s) {unknown}; choose from {list(ROLES)}")
            return tuple(dict.fromkeys(parts))
        return v

    @field_validator("dashboard_users")
    @classmethod
    def _check_users(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            parse_users(v.get_secret_value())
        return v

    @property
    def accounts(self) -> dict[str, tuple[DashboardRole, str]]:
        """Named dashboard users → (role, password hash); empty when none are configured."""
        return parse_users(self.dashboard_users.get_secret_value()) if self.dashboard_users else {}

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'callsense.db').resolve()}"

    @property
    def effective_worker_instance_id(self) -> str | None:
        if self.worker_instance_id:
            return self.worker_instance_id
        return f"{self.app_id}-worker" if self.broker_kind == "noida" else None


DashboardRole = Literal["supervisor", "analyst"]
DASHBOARD_ROLES: tuple[DashboardRole, ...] = ("supervisor", "analyst")
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


def parse_users(text: str) -> dict[str, tuple[DashboardRole, str]]:
    """``name:role:hash,...`` → {name: (role, hash)}; a clear error for a malformed entry (the
    error never repeats a hash)."""
    users: dict[str, tuple[DashboardRole, str]] = {}
    for i, entry in enumerate(e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            raise ValueError(f"user entry {i + 1}: expected name:role:hash")
        name, role, hashed = parts
        if not _USER_NAME.match(name):
            raise ValueError(f"user entry {i + 1}: bad user name {name!r}")
        if role not in DASHBOARD_ROLES:
            raise ValueError(f"user {name}: role must be one of {list(DASHBOARD_ROLES)}")
        if name in users:
            raise ValueError(f"user {name} is listed twice")
        users[name] = (role, hashed)  # type: ignore[assignment]
    return users


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (read once from the environment)."""
    return Settings()


def settings_markdown() -> str:
    """Markdown table of every setting: env name, default, doc line."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(shipped model)" if name == "model_dir" else "(computed)"
        else:
            default = field.default
            if default is None:
                default = "unset"
            elif default == "":
                default = "empty"
            elif isinstance(default, tuple):
                default = ",".join(default)
        rows.append(f"| `CALLSENSE_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)
