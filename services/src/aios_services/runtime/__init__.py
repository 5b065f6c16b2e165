"""The service runtime every AIOS service uses: bus wrapper, settings, telemetry, lifecycle."""

from .bus import Bus, connect
from .service import HealthDetails, cancel_and_wait, keep_running, main_for, run_service
from .settings import ServiceSettings
from .telemetry import extract, inject, setup_tracing

__all__ = [
    "Bus",
    "HealthDetails",
    "ServiceSettings",
    "cancel_and_wait",
    "connect",
    "extract",
    "inject",
    "keep_running",
    "main_for",
    "run_service",
    "setup_tracing",
]
