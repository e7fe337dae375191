"""Entry Gate: mask check, hand sanitizer and door relay at a building entrance."""

import os

__version__ = "0.1.0"

# OpenCV and MediaPipe's native code log to stderr on their own; the gate
# reports problems itself, in one line, so their chatter is turned down
# unless the user asks for it.
for _name, _quiet in (
    ("OPENCV_LOG_LEVEL", "OFF"),
    ("OPENCV_FFMPEG_LOGLEVEL", "-8"),  # AV_LOG_QUIET
    ("GLOG_minloglevel", "2"),
    ("TF_CPP_MIN_LOG_LEVEL", "2"),
):
    os.environ.setdefault(_name, _quiet)
