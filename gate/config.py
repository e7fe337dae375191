"""One validated settings model for the whole gate.

Settings come from (highest first) keyword arguments, ``GATE_*`` environment
variables (nested with ``__``, e.g. ``GATE_POLICY__UNLOCK_SECONDS=4``) and a TOML
file. Unknown keys anywhere are errors, and so are GATE_* variables that name no
setting, so a typo never silently falls back to a default at a door.
"""

from __future__ import annotations

import difflib
import tempfile
import tomllib
from collections.abc import Mapping
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gate.errors import GateError

DEFAULT_DATA_DIR = Path("var")
# The firmware refuses anything longer; the host never asks for more.
MAX_UNLOCK_SECONDS = 30.0
LEAVE_FRAMES = 3  # frames a face may go unseen and still be the same visitor


class Section(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskPolicy(StrEnum):
    DENY = "deny"  # no admission without a correctly worn mask
    REMIND = "remind"  # admit, but log, alert and prompt the visitor


class CameraSettings(Section):
    source: str = Field(
        "simulated",
        description="'simulated', a camera index ('0'), an RTSP/HTTP URL or a video file path.",
    )
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(480, ge=48, le=4320)
    # 30 fps lets three agreeing frames settle a label in 0.1 s.
    fps: float = Field(30.0, gt=0, le=60)
    min_face_px: int = Field(40, ge=8, description="Faces narrower than this are ignored.")
    roi: tuple[float, float, float, float] = Field(
        (0.0, 0.0, 1.0, 1.0),
        description="Region of interest as fractions (x0, y0, x1, y1) of the frame.",
    )
    stall_seconds: float = Field(3.0, gt=0, description="No frame for this long = camera down.")

    @field_validator("roi")
    @classmethod
    def _roi_inside_frame(cls, roi: tuple[float, float, float, float]) -> tuple:
        x0, y0, x1, y1 = roi
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("roi must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return roi


class StationSettings(Section):
    port: str = Field("emulated", description="'emulated' or a serial device such as /dev/ttyACM0.")
    baudrate: int = Field(115200, gt=0)
    # The firmware drops a silent host after 1.5 s; three beats fit in that.
    heartbeat_seconds: float = Field(0.5, gt=0, le=0.5)
    ack_timeout_seconds: float = Field(0.2, gt=0, le=5)
    retries: int = Field(5, ge=0, le=20)
    dose_ms: int = Field(600, ge=50, le=5000)


class PolicySettings(Section):
    mask_policy: MaskPolicy = MaskPolicy.DENY
    sanitizer_required: bool = True
    unlock_seconds: float = Field(
        5.0, ge=1, le=MAX_UNLOCK_SECONDS, description="How long the strike stays released."
    )
    sanitizer_timeout_seconds: float = Field(15.0, gt=0, le=300)
    decision_window_seconds: float = Field(
        0.1, ge=0, le=5, description="Shortest time a face is watched before a decision."
    )
    deny_hold_seconds: float = Field(
        3.0, gt=0, le=60, description="How long a denied visitor sees the prompt before re-check."
    )
    leave_seconds: float = Field(
        1.5, ge=0.5, le=30, description="A face unseen this long has left the gate."
    )
    capacity: int | None = Field(
        None, ge=1, description="Most people inside at once; none = no limit."
    )


class SnapshotSettings(Section):
    admitted: bool = False
    denied: bool = True
    blur_faces: bool = False


class RetentionSettings(Section):
    snapshot_days: int = Field(7, ge=0)
    entry_days: int = Field(365, ge=1)
    interval_minutes: float = Field(60.0, gt=0)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    kiosk_addresses: list[IPvAnyAddress] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        validate_default=True,
        description="The kiosk screen has no login: only these addresses see it.",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        validate_default=True,
        description="Reverse proxies whose X-Forwarded-For names the client (login rate "
        "limit, audit). Empty: no proxy is trusted.",
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    timezone: str = "Asia/Ho_Chi_Minh"
    default_language: str = Field("vi", pattern="^(vi|en)$")
    secure_cookies: bool = Field(False, description="Set on when the panel is served over HTTPS.")
    mjpeg_fps: float = Field(10.0, gt=0, le=10)
    csv_separator: Literal[",", ";"] = Field(
        ",",
        description="';' also writes decimal commas: what Excel expects where the system's "
        "number format uses a decimal comma, as in Vietnamese.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str) -> str:
        """Checked here, so `gate config check` finds a typo before `gate run` does."""
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        return timezone


class KioskSettings(Section):
    """The visitor's screen: how loud it speaks, and when it keeps quiet."""

    volume: int = Field(80, ge=0, le=100, description="Cues and spoken prompts, in percent.")
    quiet_hours: tuple[time, time] | None = Field(
        None,
        description="From, until (local time, server.timezone), e.g. ['21:00', '06:30']: "
        "the kiosk plays at quiet_volume in between.",
    )
    quiet_volume: int = Field(0, ge=0, le=100, description="Volume in quiet hours; 0 = silent.")
    sounds_dir: Path | None = Field(
        None,
        description="The site's own recordings, one file per prompt (wear_mask.ogg, …, "
        "also .wav or .mp3); a prompt without one keeps the shipped voice.",
    )
    dispenser_side: Literal["left", "right", "below"] = Field(
        "right", description="Where the dispenser is, seen by a visitor facing the screen."
    )

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours_differ(cls, hours: tuple[time, time] | None) -> tuple[time, time] | None:
        if hours is not None and hours[0] == hours[1]:
            raise ValueError("quiet_hours must start and end at different times")
        return hours

    def volume_at(self, now: time) -> float:
        """The volume (0..1) at a local time of day; quiet hours may run past midnight."""
        if self.quiet_hours is not None:
            start, end = self.quiet_hours
            inside = start <= now < end if start < end else now >= start or now < end
            if inside:
                return self.quiet_volume / 100
        return self.volume / 100


class HubSettings(Section):
    """The site hub: where this gate reports (gate side) and the hub's own database (the
    hub side, `gate hub`). With no url the gate reports nowhere and works alone."""

    url: str | None = Field(
        None, pattern=r"^https?://", description="The hub's base URL, e.g. https://hub:8100/."
    )
    token_file: Path | None = Field(
        None, description="File holding this gate's token (`gate hub add-gate` printed it)."
    )
    batch_size: int = Field(200, ge=1, le=1000, description="Records sent in one request.")
    interval_seconds: float = Field(
        1.0, gt=0, le=60, description="How often the gate reports and asks for orders."
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    database_url: str | None = Field(
        None, description="The hub's own database (PostgreSQL; SQLite only for the demo)."
    )
    offline_after_seconds: float = Field(
        30.0, gt=0, description="A gate not heard from this long shows as offline at the hub."
    )


class Settings(BaseSettings):
    """Everything the gate can be told. Defaults run the embedded demo setup."""

    model_config = SettingsConfigDict(
        env_prefix="GATE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )
    # Set by load_settings; class-level so the TOML source can find it.
    _toml_file: ClassVar[Path | None] = None

    gate_id: str = Field("gate-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite at <data_dir>/gate.db."
    )
    camera: CameraSettings = CameraSettings()
    station: StationSettings = StationSettings()
    policy: PolicySettings = PolicySettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    retention: RetentionSettings = RetentionSettings()
    server: ServerSettings = ServerSettings()
    kiosk: KioskSettings = KioskSettings()
    hub: HubSettings = HubSettings()

    @model_validator(mode="after")
    def _leave_outlasts_missed_frames(self) -> Settings:
        """A face the detector misses for a frame or two has not left. Were leave_seconds
        shorter than that, every visit would end before it is decided."""
        shortest = LEAVE_FRAMES / self.camera.fps
        if self.policy.leave_seconds < shortest:
            raise ValueError(
                f"policy.leave_seconds must be at least {LEAVE_FRAMES} camera frames: "
                f"{shortest:g} s at camera.fps {self.camera.fps:g}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, GateEnvironment(settings_cls)]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gate.db'}"

    @property
    def snapshots_dir(self) -> Path:
        """Pictures of visitors, one folder per UTC day (YYYY-MM-DD)."""
        return self.data_dir / "snapshots"

    def shown(self) -> dict[str, Any]:
        """The settings as JSON values for people to read (`gate config show`, the admin
        page): a database password must not end up in a screenshot or a ticket."""
        values = self.model_dump(mode="json")
        if self.database_url:
            values["database_url"] = masked_url(self.database_url)
        if self.hub.database_url:
            values["hub"]["database_url"] = masked_url(self.hub.database_url)
        return values


def masked_url(url: str) -> str:
    """A database URL with its password as ***. A string that is no URL cannot be taken
    apart, so it is not shown at all rather than risk showing a password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a valid database URL>"


class GateEnvironment(EnvSettingsSource):
    """The GATE_* variables, held to the file's rules: a variable that names no setting is
    an error, as an unknown key is, and a value that is not JSON where a section or a list
    needs it is named by its variable (the library names only the section)."""

    def __call__(self) -> dict[str, Any]:
        sections, settings = self._names()
        for variable in self.env_vars:
            name = variable.upper()
            if name.startswith(self.env_prefix.upper()) and name not in sections + settings:
                guess = difflib.get_close_matches(name, settings, n=1)
                hint = f" (did you mean {guess[0]}?)" if guess else ""
                raise GateError(f"unknown environment variable {name}{hint}")
        return super().__call__()

    def _names(self) -> tuple[list[str], list[str]]:
        """The variables that name a whole section (GATE_CAMERA, as JSON), and those that
        name one setting (GATE_DATA_DIR, GATE_CAMERA__SOURCE): the ones a typo most likely
        meant."""
        sections, settings = [], []
        for field_name, field in self.settings_cls.model_fields.items():
            name = f"{self.env_prefix}{field_name}".upper()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                sections.append(name)
                settings += [
                    f"{name}{self.env_nested_delimiter}{key}".upper()
                    for key in field.annotation.model_fields
                ]
            else:
                settings.append(name)
        return sections, settings

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:  # a whole section in one variable: GATE_CAMERA='{...}'
            raise _not_json(f"{self.env_prefix}{field_name}", exc) from None

    def explode_env_vars(
        self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]
    ) -> dict[str, Any]:
        try:
            return super().explode_env_vars(field_name, field, env_vars)
        except ValueError as exc:  # one key of a section: find which variable holds it
            for name, value in env_vars.items():
                try:
                    super().explode_env_vars(field_name, field, {name: value})
                except ValueError:
                    raise _not_json(name, exc) from None
            raise


def _not_json(variable: str, exc: ValueError) -> GateError:
    return GateError(f"environment variable {variable.upper()} is not valid JSON: {exc}")


def off_the_record(settings: Settings, scratch: Path) -> Settings:
    """The settings for judging visitors who are not at the door: a recording or a
    benchmark's simulated faces. They must never move the real relay, enter the gate's
    entry log or leave snapshots, so the station is the emulated one, the database a
    throwaway SQLite file in `scratch`, and no snapshot is taken (one would belong to no
    entry, and retention would never delete it). They have no hands to sanitize and
    nobody walks through, so the sanitizer step is skipped and the door pulse is the
    shortest one, 1 s."""
    policy = settings.policy.model_copy(update={"sanitizer_required": False, "unlock_seconds": 1})
    return settings.model_copy(
        update={
            "policy": policy,
            "database_url": f"sqlite:///{scratch / 'off-the-record.db'}",
            "station": settings.station.model_copy(update={"port": "emulated"}),
            "snapshots": settings.snapshots.model_copy(update={"admitted": False, "denied": False}),
        }
    )


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional TOML file, the environment and overrides.

    Raises GateError with one line naming the problem (file, key, reason).
    """
    if path is not None:
        if not path.is_file():
            raise GateError(f"config file not found: {path}")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GateError(f"config file {path} is not valid TOML: {exc}") from None
        except OSError as exc:  # for one, not readable by the service user
            raise GateError(f"cannot read config file {path}: {exc.strerror}") from None
    Settings._toml_file = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise GateError(f"invalid config{f' in {path}' if path else ''}: {describe(exc)}") from None
    finally:
        Settings._toml_file = None


def check_data_dir(data_dir: Path) -> None:
    """Create the data dir and prove it is writable, or say which one is not.

    The probe is a temporary file of its own: with one shared name, two commands
    starting together (a gate and `gate user add`) removed each other's probe, and
    one was told the dir is not writable.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise GateError(f"data dir {data_dir} is not writable: {exc.strerror}") from None


def describe(exc: ValidationError) -> str:
    """Squeeze a pydantic error into one line that names each bad key."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        elif not error["loc"] and error["type"] == "value_error":
            parts.append(str(error["ctx"]["error"]))  # a check across keys names its keys
        else:
            parts.append(f"'{key}': {error['msg']}")
    return "; ".join(parts)
