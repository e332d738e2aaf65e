"""Verification metrics (numpy only), public: a device can calibrate on its own pairs."""

from ._metrics import *  # noqa: F401,F403
from ._metrics import __all__  # noqa: F401
