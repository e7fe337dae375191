"""Prometheus metrics for the whole gate, on one registry the panel exposes at /metrics.

A dedicated registry (not prometheus_client's global one) keeps whatever else
runs in the interpreter, tests and tools included, out of the gate's scrape.
The runtime and the station link update these objects; the panel only serves
them and keeps its own stream gauges.
"""

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# -- camera
FRAMES = Counter("gate_frames_total", "Camera frames analysed.", registry=REGISTRY)
CAMERA_FPS = Gauge(
    "gate_camera_fps", "Frames per second the camera delivered recently.", registry=REGISTRY
)
INFERENCE_MS = Histogram(
    "gate_inference_ms",
    "Per-frame analysis time (detection + classification) in milliseconds.",
    buckets=(1, 2, 4, 6, 8, 12, 16, 25, 50, 100, 250),
    registry=REGISTRY,
)

# -- decisions and people
DECISIONS = Counter(
    "gate_decisions_total", "Finished visits by outcome.", ["outcome"], registry=REGISTRY
)
OCCUPANCY = Gauge("gate_occupancy", "People inside (entries minus exits).", registry=REGISTRY)

# -- station link
STATION_LINK = Enum(
    "gate_station_link",
    "Serial link state to the sanitizer/door station.",
    states=["connected", "degraded", "offline"],
    registry=REGISTRY,
)
STATION_RETRANSMITS = Counter(
    "gate_station_retransmits_total", "Packets resent to the station.", registry=REGISTRY
)
STATION_LINK_ERRORS = Counter(
    "gate_station_link_errors_total",
    "Frames from the station dropped as broken, by kind (crc, framing).",
    ["kind"],
    registry=REGISTRY,
)
FLUID_PERCENT = Gauge(
    "gate_station_fluid_percent", "Sanitizer fluid level the station reported.", registry=REGISTRY
)

# -- queues
QUEUE_DEPTH = Gauge(
    "gate_queue_depth",
    "Items waiting in an internal queue; 'event_bus_max' (deepest subscriber) is set by the panel.",
    ["queue"],
    registry=REGISTRY,
)

# -- the event loop
LOOP_LAG_MS = Histogram(
    "gate_event_loop_lag_ms",
    "How late the runtime's 50 ms tick wakes: everything on the event loop waits as long.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000),
    registry=REGISTRY,
)

# -- panel
SSE_CLIENTS = Gauge(
    "gate_panel_sse_clients", "Open server-sent-event streams (panel and kiosk).", registry=REGISTRY
)
MJPEG_CLIENTS = Gauge("gate_panel_mjpeg_clients", "Open live-video streams.", registry=REGISTRY)
LOGIN_FAILURES = Counter(
    "gate_panel_login_failures_total",
    "Refused panel logins (wrong password, locked, disabled, rate limited).",
    registry=REGISTRY,
)

# -- site hub (gate.hub.client)
HUB_BACKLOG = Gauge(
    "gate_hub_backlog_records", "Writes not yet acknowledged by the site hub.", registry=REGISTRY
)
HUB_LAG = Gauge(
    "gate_hub_lag_seconds",
    "How long the oldest write not yet at the hub has waited.",
    registry=REGISTRY,
)
HUB_LAST_SUCCESS = Gauge(
    "gate_hub_last_success_timestamp_seconds",
    "Unix time of the last report the hub acknowledged (0: none yet).",
    registry=REGISTRY,
)
