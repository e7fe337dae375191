"""Pico entry point: MicroPython runs this file at boot.

Keeps an unwrapped millisecond clock (ticks_ms wraps) and polls the firmware
forever. The watchdog resets the board if the loop ever stalls, and a reset
always comes up with the relay and the pump off. If the loop raises, the relay
and the pump go off at the pins first; the board then waits, unfed, for that reset.
"""

import sys
import time

from firmware import Firmware
from hal import PicoHal


def run():
    hal = PicoHal()
    if hal.safe_mode_requested():
        print("entry-gate-station: safe mode, exit button held; REPL left free")
        return
    firmware = Firmware(hal)
    hal.start()
    try:
        now_ms = 0
        last = time.ticks_ms()
        while True:
            tick = time.ticks_ms()
            now_ms += time.ticks_diff(tick, last)
            last = tick
            firmware.poll(now_ms)
            hal.idle()
    except BaseException as exc:  # a bug must not leave the door as it was
        hal.fail_safe()
        sys.print_exception(exc)  # the host drops it as noise; a terminal shows it
        hal.halt()


run()
