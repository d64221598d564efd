"""Google Analytics 4: one Measurement Protocol request body per canonical record.

Docs followed:
- "Send Measurement Protocol events to Google Analytics",
  https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events?authuser=0
  (body: ``client_id``, optional ``user_id``, ``timestamp_micros``, ``events``; events need
  ``session_id`` and ``engagement_time_msec`` params to show as user activity; the example
  sends ``session_id`` as a string).
- "Measurement Protocol Reference",
  https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference
  (``timestamp_micros`` is Unix time in microseconds; reserved event names, among them
  ``session_start`` and ``app_background``; reserved prefixes; collection limits).
- "Event naming rules", https://support.google.com/analytics/answer/13316687?sjid=9150591490391416113-AP
  (names start with a letter, then letters, digits and underscores; reserved names and the
  prefixes ``_``, ``firebase_``, ``ga_``, ``google_``, ``gtag.``).
- "Event collection limits", https://support.google.com/analytics/answer/9267744?hl=en&ref_topic=9267641
  (event and parameter names up to 40 characters, 25 parameters per event, parameter values up
  to 100 characters on standard properties).

Mapping:
- Body: ``client_id`` = device_id, ``user_id`` when known, ``timestamp_micros`` = record time x
  1000, one event. (App streams want ``app_instance_id`` from the Firebase SDK instead of
  ``client_id``; the pipeline has no such id.)
- Every event's params start with ``session_id`` (session start in whole SECONDS, as a string,
  like gtag's session id), ``session_number`` and ``engagement_time_msec``.
- session_start -> a ``session_start`` event, as SPEC section 6 asks. Note: GA4 lists
  ``session_start`` among its reserved names and may drop it when sent through the Measurement
  Protocol (it derives its own session_start from ``session_id``); the record is still the
  pipeline's explicit session boundary. session_end -> ``session_end`` with
  ``engagement_time_msec`` = the session's foreground time, plus duration, event count, end
  reason and attributes. An app event named ``session_start`` is still renamed, so only the
  pipeline's own session records carry that name.
- screen_view -> ``screen_view`` with ``screen_name``; custom and commerce events -> their name;
  lifecycle events -> mParticle's app state transition names in snake case
  (``application_background``: ``app_background`` is reserved). Enriched events carry
  ``engagement_time_msec`` = 1 so GA4 counts them as user activity without double counting the
  foreground time reported by ``session_end``.
- Names are sanitized: runs of other characters become ``_``, names not starting with a letter
  or reserved get an ``event_`` (events) or ``param_`` (params) prefix, then cut to 40
  characters. Param values: strings cut to 100 characters, booleans as "true"/"false", numbers
  as they are; null, lists and objects are dropped (GA4 params hold strings and numbers). At
  most 25 params: the fixed ones first, then attributes in their order.
- GA4 has no deduplication key: a resent body is counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pipeline.partners._common import (
    NAMED_EVENT_TYPES,
    Memo,
    event_properties,
    session_properties,
)
from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    SCREEN_VIEW,
    SESSION_ATTRIBUTE,
    SESSION_END,
    SESSION_START,
)

FORMAT = "ga4"

SESSION_START_EVENT = "session_start"
SESSION_END_EVENT = "session_end"
SCREEN_VIEW_EVENT = "screen_view"
APP_STATE_EVENT_NAMES: Mapping[str, str] = {
    APP_LAUNCH: "application_initialized",
    APP_FOREGROUND: "application_foreground",
    APP_BACKGROUND: "application_background",
    APP_TERMINATE: "application_exit",
    SESSION_ATTRIBUTE: "session_attribute",
}

MAX_NAME_LENGTH = 40
MAX_PARAMS = 25
MAX_PARAM_VALUE_LENGTH = 100
EVENT_ENGAGEMENT_TIME_MSEC = 1

# "_" goes when names are sanitized, and "gtag." becomes "gtag_".
RESERVED_PREFIXES = ("firebase_", "ga_", "google_", "gtag_")
# Measurement Protocol reference (app and web) plus the GA4 "Event naming rules" web list.
RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_background",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_store_subscription_cancel",
        "app_store_subscription_convert",
        "app_store_subscription_renew",
        "app_update",
        "app_upgrade",
        "click",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "file_download",
        "firebase_campaign",
        "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression",
        "first_open",
        "first_visit",
        "form_start",
        "form_submit",
        "in_app_purchase",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "os_update",
        "page_view",
        "scroll",
        "session_start",
        "session_start_with_rollout",
        "user_engagement",
        "video_complete",
        "video_progress",
        "video_start",
        "view_search_results",
    }
)

_NOT_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9]+")


@lru_cache(maxsize=4096)
def ga4_name(raw: str, prefix: str, reserved: frozenset[str] = frozenset()) -> str:
    """``raw`` made a valid GA4 event or param name; ``prefix`` marks names that needed one."""
    name = _NOT_NAME_CHARACTERS.sub("_", raw).strip("_")
    if not name[:1].isalpha() or name.startswith(RESERVED_PREFIXES) or name in reserved:
        name = f"{prefix}_{name}" if name else prefix
    return name[:MAX_NAME_LENGTH].rstrip("_")


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Measurement Protocol request body carrying one event for ``record``."""
    kind = record["type"]
    if kind == SESSION_START:
        name, epoch_ms, start = SESSION_START_EVENT, record["start_ts"], record["start_ts"]
        engagement = EVENT_ENGAGEMENT_TIME_MSEC
        extra = session_properties(record)
    elif kind == SESSION_END:
        name, epoch_ms, start = SESSION_END_EVENT, record["end_ts"], record["start_ts"]
        engagement = record["foreground_ms"]
        extra = session_properties(record)
    else:
        name, epoch_ms, start = _EVENT_NAMES[kind, record.get("name")], record["ts"], None
        engagement = EVENT_ENGAGEMENT_TIME_MSEC
        attributes = record.get("attributes")
        # A plain event's attributes are read, not copied: nothing here changes them.
        if kind != SESSION_ATTRIBUTE and type(attributes) is dict:
            extra = attributes
        elif attributes is None and kind != SESSION_ATTRIBUTE:  # most events: no attributes
            extra = {}
        else:
            extra = event_properties(record)
    params: dict[str, Any] = {
        "session_id": _SESSION_IDS[int(start if start is not None else record["session_start_ts"])],
        "session_number": record["session_number"],
        "engagement_time_msec": engagement,
    }
    if kind == SCREEN_VIEW and (screen_name := record.get("name")):
        params["screen_name"] = screen_name[:MAX_PARAM_VALUE_LENGTH]
    if extra:
        _add_params(params, extra)
    user_id = record.get("user_id")
    events = [{"name": name, "params": params}]
    if user_id:
        return [
            {
                "client_id": record["device_id"],
                "user_id": user_id,
                "timestamp_micros": int(epoch_ms) * 1000,
                "events": events,
            }
        ]
    return [
        {
            "client_id": record["device_id"],
            "timestamp_micros": int(epoch_ms) * 1000,
            "events": events,
        }
    ]


def _session_id(start_ms: int) -> str:
    # gtag's session id: the start in whole seconds, as a string (the same for a whole session).
    return str(start_ms // 1000)


def event_name(kind_and_name: tuple[str, str | None]) -> str:
    """The GA4 event name of an enriched event of this type and name."""
    kind, name = kind_and_name
    if kind == SCREEN_VIEW:
        return SCREEN_VIEW_EVENT
    if kind in NAMED_EVENT_TYPES:
        return ga4_name(name or kind, "event", RESERVED_EVENT_NAMES)
    return APP_STATE_EVENT_NAMES[kind]


def _param_name(key: str) -> str:
    return ga4_name(key, "param")


_SESSION_IDS = Memo(_session_id, 1 << 14)
_EVENT_NAMES = Memo(event_name)
_PARAM_NAMES = Memo(_param_name)


def _add_params(params: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Add ``extra`` to ``params`` as GA4 params; names already in ``params`` keep their value."""
    param_names = _PARAM_NAMES
    for key, value in extra.items():
        if len(params) >= MAX_PARAMS:
            return
        kind = type(value)
        if kind is str:
            if len(value) > MAX_PARAM_VALUE_LENGTH:
                value = value[:MAX_PARAM_VALUE_LENGTH]
        elif kind is not int and kind is not float:
            value = _param_value(value)
            if value is None:
                continue
        name = param_names[key]
        if name not in params:
            params[name] = value


def _param_value(value: Any) -> str | int | float | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_PARAM_VALUE_LENGTH]
    return None
