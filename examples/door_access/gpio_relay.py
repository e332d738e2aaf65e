"""A door action for a relay on a Raspberry Pi GPIO pin (gpiozero, preinstalled on Raspberry Pi OS).

In door.toml:

    [action]
    type = "python"
    callable = "gpio_relay:open_door"

door_access.py imports this file from the folder of door.toml, so the pin is claimed at start-up
and a wrong pin or a missing gpiozero stops the service with a clear error, not at the first visitor.
"""

from gpiozero import DigitalOutputDevice

RELAY_PIN = 17  # BCM numbering: GPIO17 is physical pin 11
PULSE_SECONDS = 2.0  # how long the lock stays released
# Most relay boards switch on a low input; set active_high=True for one that switches on high.
relay = DigitalOutputDevice(RELAY_PIN, active_high=False, initial_value=False)


def open_door(decision) -> None:
    # blink in the background: the frame loop carries on while the lock is released.
    relay.blink(on_time=PULSE_SECONDS, off_time=0, n=1, background=True)
