"""Display texts for values that come from the runtime as keys (prompts, outcomes, alerts).

Unknown keys are shown as they are rather than hidden, so a new alert kind
from the runtime is visible at once and merely untranslated.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gate.server.i18n import N_
from gate.store.models import Outcome

# Kiosk prompts, keyed as the controller publishes them.
PROMPTS: dict[str, str] = {
    "idle": N_("Please step up"),
    "checking": N_("Checking your mask…"),
    "wear_mask": N_("Please wear your mask"),
    "pull_mask_up": N_("Please pull your mask up over your nose and mouth"),
    "sanitize": N_("Please sanitize your hands"),
    "enter": N_("Please enter"),
    "wait_full": N_("Please wait (full)"),
    "lockdown": N_("Entrance closed"),
    "emergency": N_("Emergency: door released"),
    "out_of_service": N_("Out of service"),
}

OUTCOMES: dict[str, str] = {
    Outcome.PENDING: N_("Pending"),
    Outcome.ADMITTED: N_("Admitted"),
    Outcome.ADMITTED_REMINDED: N_("Admitted (reminded)"),
    Outcome.DENIED_NO_MASK: N_("Denied: no mask"),
    Outcome.DENIED_INCORRECT_MASK: N_("Denied: mask worn incorrectly"),
    Outcome.DENIED_LOCKDOWN: N_("Denied: lockdown"),
    Outcome.NOT_SANITIZED: N_("Did not sanitize"),
    Outcome.LEFT_WAITING: N_("Left while waiting"),
    Outcome.INTERRUPTED: N_("Interrupted"),
}

ALERTS: dict[str, str] = {
    "no_mask": N_("Visitor without mask"),
    "incorrect_mask": N_("Mask worn incorrectly"),
    "fluid_low": N_("Sanitizer fluid low"),
    "fluid_empty": N_("Sanitizer fluid empty"),
    "door_forced": N_("Door forced open"),
    "door_held": N_("Door held open"),
    "station_offline": N_("Station offline"),
    "camera_offline": N_("Camera offline"),
    "capacity_reached": N_("Capacity reached"),
    "tamper": N_("Station tampered with"),
    "fault": N_("Station fault"),
    "unlock_failed": N_("Unlock command failed"),
    "dispense_failed": N_("Dispense command failed"),
    "emergency": N_("Emergency release"),
}

# An alert's message: what happened or what to do, keyed as the runtime raises it.
# Entry alerts carry the visit's outcome; other keys say what the guard should do.
ALERT_DETAILS: dict[str, str] = {
    **OUTCOMES,
    "check_camera": N_("Check the camera: no frames are arriving"),
    "check_station_link": N_("Check the station's cable and power"),
    "check_station": N_("Check the sanitizer station"),
    "check_door": N_("Check the door"),
    "close_door": N_("Close the door"),
    "refill_soon": N_("Refill the sanitizer soon"),
    "refill_now": N_("Refill the sanitizer now"),
    "fire_alarm": N_("Fire alarm input: the door stays released until it clears"),
    "released_by_staff": N_("Released from the panel"),
    "entry_paused": N_("New visitors wait until someone leaves"),
}

# Station events in the live feed, keyed as the firmware names them.
STATION_EVENTS: dict[str, str] = {
    "boot": N_("Station started"),
    "hands_present": N_("Hands under the dispenser"),
    "hands_absent": N_("Hands taken away"),
    "dispensed": N_("Sanitizer dispensed"),
    "fluid_level": N_("Sanitizer level"),
    "fluid_low": N_("Sanitizer fluid low"),
    "fluid_empty": N_("Sanitizer fluid empty"),
    "door_opened": N_("Door opened"),
    "door_closed": N_("Door closed"),
    "door_forced": N_("Door forced open"),
    "door_held": N_("Door held open"),
    "exit_request": N_("Exit button pressed"),
    "fire_on": N_("Fire alarm input on"),
    "fire_off": N_("Fire alarm input cleared"),
    "tamper": N_("Station tampered with"),
    "fault": N_("Station fault"),
}

STATES: dict[str, str] = {
    "idle": N_("Idle"),
    "checking": N_("Checking"),
    "denied": N_("Denied"),
    "sanitize": N_("Sanitizing"),
    "sanitizing": N_("Sanitizing"),
    "unlocked": N_("Unlocked"),
    "normal": N_("Normal"),
    "lockdown": N_("Lockdown"),
    "emergency": N_("Emergency release"),
    "degraded": N_("Degraded"),
    "full": N_("Full"),
}

ROLES: dict[str, str] = {
    "admin": N_("Administrator"),
    "manager": N_("Manager"),
    "security": N_("Security"),
}

ACTIONS: dict[str, str] = {
    "override_unlock": N_("Unlocked once"),
    "lockdown_on": N_("Lockdown on"),
    "lockdown_off": N_("Lockdown off"),
    "emergency_on": N_("Emergency release on"),
    "emergency_off": N_("Emergency release off"),
    "occupancy_reset": N_("Occupancy reset"),
    "alert_ack": N_("Alert acknowledged"),
    "login": N_("Logged in"),
    "login_failed": N_("Login refused"),
    "logout": N_("Logged out"),
    "user_create": N_("User created"),
    "user_password": N_("Password changed"),
    "user_disable": N_("User disabled"),
    "user_enable": N_("User enabled"),
    "user_role": N_("Role changed"),
    "retention": N_("Old records deleted"),
}

# An audit row's JSON detail, per action (`gate.store.records.audit_detail` writes
# it). Older rows hold plain text, shown as it is.
AUDIT_DETAILS: dict[str, str] = {
    "login": N_("from %(address)s"),
    "login_failed": N_("from %(address)s"),
    "user_create": N_("%(user)s, role: %(role)s"),
    "user_password": N_("user %(user)s"),
    "user_disable": N_("user %(user)s"),
    "user_enable": N_("user %(user)s"),
    "user_role": N_("%(user)s, role: %(role)s"),
    "alert_ack": N_("alert #%(alert)s, %(kind)s: %(message)s"),
    "retention": N_("%(entries)s entries and %(snapshots)s snapshots deleted"),
}

# Fields of an audit detail whose values are keys of another table, shown translated.
DETAIL_TABLES: dict[str, dict[str, str]] = {
    "role": ROLES,
    "kind": ALERTS,
    "message": ALERT_DETAILS,
}

# Why a login was refused: the audit row's reason.
LOGIN_REFUSALS: dict[str, str] = {
    "bad_credentials": N_("Wrong username or password."),
    "locked": N_("Too many failed attempts. This account is locked for a few minutes."),
    "throttled": N_(
        "Refused without checking the password: too many failed attempts for this account "
        "from this address."
    ),
    "disabled": N_("This account is disabled."),
}

# Why the gate refused a staff command (CommandRefused), shown to the guard.
COMMAND_REFUSALS: dict[str, str] = {
    "station_offline": N_(
        "The station is offline, so the door cannot be unlocked. Check the station's cable "
        "and power."
    ),
    "door_released": N_(
        "The door is already released for an emergency: there is nothing to unlock. "
        "End the emergency first to let people in one at a time."
    ),
}

LINK_STATES: dict[str, str] = {
    "connected": N_("Connected"),
    "degraded": N_("Unreliable"),
    "offline": N_("Offline"),
}

MASK_LABELS: dict[str, str] = {
    "mask": N_("Mask"),
    "incorrect_mask": N_("Mask worn incorrectly"),
    "no_mask": N_("No mask"),
}


def label(table: dict[str, str], key: object, translate: Callable[[str], str]) -> str:
    if key is None:
        return ""
    text = table.get(str(key))
    return translate(text) if text is not None else str(key)


def describe_audit_detail(action: str, detail: str, translate: Callable[[str], str]) -> str:
    """An audit row's detail in the reader's language; anything unexpected as stored."""
    template = AUDIT_DETAILS.get(action)
    try:
        fields = json.loads(detail) if template else None
        if not isinstance(fields, dict):
            return detail
        values = {
            k: label(DETAIL_TABLES[k], v, translate) if k in DETAIL_TABLES else v
            for k, v in fields.items()
        }
        return translate(template) % values
    except (ValueError, KeyError, TypeError):  # plain text, or fields of another shape
        return detail


def describe_audit_reason(action: str, reason: str, translate: Callable[[str], str]) -> str:
    """Staff type their own reasons; a refused login's reason is one of ours, translated."""
    return label(LOGIN_REFUSALS, reason, translate) if action == "login_failed" else reason


def catalog(translate: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """All key tables translated, for the live page's script (it renders feed items)."""
    return {
        name: {k: translate(v) for k, v in table.items()}
        for name, table in {
            "prompts": PROMPTS,
            "outcomes": OUTCOMES,
            "alerts": ALERTS,
            "details": ALERT_DETAILS,
            "station": STATION_EVENTS,
            "states": STATES,
            "masks": MASK_LABELS,
            "links": LINK_STATES,
            "actions": ACTIONS,
        }.items()
    }
