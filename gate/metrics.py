"""Prometheus metrics for the whole gate, on one registry the panel exposes at /metrics."""

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FRAMES = Counter("gate_frames_total", "Camera frames analysed.", registry=REGISTRY)
INFERENCE_MS = Histogram(
    "gate_inference_ms",
    "Per-frame analysis time (detection + classification) in milliseconds.",
    buckets=(1, 2, 4, 6, 8, 12, 16, 25, 50, 100, 250),
    registry=REGISTRY,
)
DECISIONS = Counter(
    "gate_decisions_total", "Finished visits by outcome.", ["outcome"], registry=REGISTRY
)
STATION_LINK = Enum(
    "gate_station_link",
    "Serial link state to the sanitizer/door station.",
    states=["connected", "degraded", "offline"],
    registry=REGISTRY,
)
OCCUPANCY = Gauge("gate_occupancy", "People inside (entries minus exits).", registry=REGISTRY)
