"""The kiosk's mirror, sounds and volume over HTTP: who may see the picture, that nobody's
picture is shown when nobody is there, and the site's own recordings."""

from __future__ import annotations

import json
from datetime import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from gate.camera.verdict import FaceVerdict, FrameAnalysis, MaskLabel
from gate.config import KioskSettings, load_settings
from gate.errors import GateError
from gate.server import audio
from tests.panel_support import client_for, make_app


def _face(box: tuple[int, int, int, int], label: MaskLabel, settled: bool = True) -> FaceVerdict:
    return FaceVerdict("t1", box, label, 0.9, settled, 10)


def _scene() -> np.ndarray:
    """A 640x480 frame whose left half is dark and right half bright: mirrored, it swaps."""
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 220
    return frame


def test_the_mirror_and_its_sounds_are_refused_outside_the_kiosk_list(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path, kiosk_addresses=["10.0.0.9"])
    runtime.frame = _scene()
    runtime.analysis = FrameAnalysis(1.0, [_face((250, 120, 140, 170), MaskLabel.MASK)])
    kiosk = client_for(app, host="10.0.0.9")
    assert kiosk.get("/kiosk/frame").status_code == 200
    assert kiosk.get("/kiosk/sounds/wear_mask").status_code == 200
    for host in ("10.0.0.5", "127.0.0.1", "::1"):
        other = client_for(app, host=host)
        for path in ("/kiosk/frame", "/kiosk/sounds/wear_mask", "/kiosk/sounds/cue-go"):
            response = other.get(path)
            assert response.status_code == 403, (host, path)
            assert not response.headers["content-type"].startswith("image/")
    # A guard logged in on the panel is not the kiosk either.
    assert client_for(app, "security", host="10.0.0.5").get("/kiosk/frame").status_code == 403
    # Nor is the kiosk's own address relayed by a proxy for someone else.
    relayed = kiosk.get("/kiosk/frame", headers={"x-forwarded-for": "203.0.113.5"})
    assert relayed.status_code == 403


def test_nobody_in_view_gets_no_picture(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    kiosk = client_for(app, host="127.0.0.1")
    runtime.frame = _scene()
    runtime.analysis = FrameAnalysis(1.0, [])  # the camera runs, nobody is there
    empty = kiosk.get("/kiosk/frame")
    assert empty.status_code == 204 and empty.content == b"" and "x-faces" not in empty.headers
    assert empty.headers["cache-control"] == "no-store"
    runtime.analysis = None  # the camera is down
    assert kiosk.get("/kiosk/frame").status_code == 204


def test_the_picture_is_mirrored_with_its_faces(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    kiosk = client_for(app, host="127.0.0.1")
    runtime.frame = _scene()
    runtime.analysis = FrameAnalysis(
        1.0,
        [
            _face((40, 100, 64, 80), MaskLabel.NO_MASK),  # 10 % of the width: come closer
            _face((300, 60, 320, 380), MaskLabel.INCORRECT_MASK, settled=False),  # 50 %: back
        ],
    )
    response = kiosk.get("/kiosk/frame")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture.shape == (480, 640)
    assert picture[:, :300].mean() > 200 and picture[:, 340:].mean() < 20  # left and right swap
    small, large = json.loads(response.headers["x-faces"])
    assert small == {
        "x": pytest.approx(1 - 104 / 640, abs=1e-4),
        "y": pytest.approx(100 / 480, abs=1e-4),
        "w": 0.1,
        "h": pytest.approx(80 / 480, abs=1e-4),
        "state": "no_mask",
        "hint": "closer",
    }
    assert large["x"] == pytest.approx(1 - 620 / 640, abs=1e-4)
    assert (large["state"], large["hint"]) == ("checking", "back")  # not settled yet


def test_sounds_come_from_the_site_folder_first(tmp_path: Path) -> None:
    site = tmp_path / "recordings"
    site.mkdir()
    (site / "wear_mask.wav").write_bytes(b"RIFF site recording")
    app, runtime = make_app(tmp_path)
    runtime.settings.kiosk = KioskSettings(sounds_dir=site)
    kiosk = client_for(app, host="127.0.0.1")
    assert kiosk.get("/kiosk/sounds/wear_mask").content == b"RIFF site recording"
    shipped = kiosk.get("/kiosk/sounds/enter")  # the site has none: ours
    assert shipped.status_code == 200 and shipped.content.startswith(b"OggS")
    assert shipped.content == (audio.SHIPPED_DIR / "enter.ogg").read_bytes()
    for name in ("idle", "nothing", "..%2Fkiosk.py", "%2Fetc%2Fpasswd"):
        assert kiosk.get(f"/kiosk/sounds/{name}").status_code == 404, name


def test_every_spoken_prompt_and_cue_is_shipped_short_and_audible() -> None:
    for name in audio.SOUNDS:
        samples, rate = soundfile.read(audio.SHIPPED_DIR / f"{name}.ogg")
        seconds = len(samples) / rate
        assert rate == audio.RATE and np.abs(samples).max() > 0.3, name
        assert (seconds < 1.0) if name.startswith("cue-") else (0.5 < seconds < 6.0), name


def test_the_three_cues_differ() -> None:
    """Go rises, stop falls and is lower, attention repeats one note: told apart by ear."""
    pitches = {}
    for kind in audio.CUES:
        samples = audio.cue(kind)
        half = len(samples) // 2
        pitches[kind] = [_pitch(samples[:half]), _pitch(samples[half:])]
    assert pitches["go"][0] < pitches["go"][1]
    assert pitches["stop"][0] > pitches["stop"][1] and max(pitches["stop"]) < min(pitches["go"])
    assert pitches["attention"][0] == pytest.approx(pitches["attention"][1], rel=0.02)


def _pitch(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / audio.RATE)[spectrum.argmax()])


def test_the_command_regenerates_every_sound(tmp_path: Path) -> None:
    """`gate kiosk sounds --out` with Debian's espeak-ng: Vietnamese speech for each prompt."""
    written = audio.make_sounds(tmp_path)
    assert sorted(p.stem for p in written) == sorted(audio.SOUNDS)
    for path in written:
        samples, _rate = soundfile.read(path)
        shipped, _ = soundfile.read(audio.SHIPPED_DIR / path.name)
        assert abs(len(samples) - len(shipped)) < 0.05 * len(shipped), path.name
    assert audio.spoken_text("wait_full") == "Vui lòng chờ, bên trong đã đủ người"


def test_quiet_hours_lower_the_volume_also_across_midnight() -> None:
    kiosk = KioskSettings(volume=70, quiet_hours=(time(21), time(6, 30)), quiet_volume=10)
    assert kiosk.volume_at(time(12)) == 0.7
    assert kiosk.volume_at(time(22)) == kiosk.volume_at(time(3)) == 0.1
    assert kiosk.volume_at(time(6, 30)) == 0.7
    day = KioskSettings(quiet_hours=(time(12), time(13)))
    assert day.volume_at(time(12, 30)) == 0.0 and day.volume_at(time(13)) == 0.8
    settings = load_settings(kiosk={"quiet_hours": ["21:00", "06:30"], "volume": 55})
    assert settings.kiosk.quiet_hours == (time(21), time(6, 30))
    for wrong in ({"quiet_hours": ["21:00", "21:00"]}, {"volume": 101}, {"loudness": 5}):
        with pytest.raises(GateError, match=f"kiosk.{next(iter(wrong))}"):
            load_settings(kiosk=wrong)


def test_the_page_and_stream_say_how_loud(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    runtime.settings.kiosk = KioskSettings(volume=35)
    page = client_for(app, host="127.0.0.1").get("/kiosk").text
    setup = json.loads(page.split('id="kiosk-setup">')[1].split("</script>")[0])
    assert setup["volume"] == 0.35 and setup["cues"]["enter"] == "go"
    assert setup["sanitize_seconds"] == runtime.settings.policy.sanitizer_timeout_seconds
