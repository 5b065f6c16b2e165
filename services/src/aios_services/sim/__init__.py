"""AIOS LLM engine simulator: an OpenAI-compatible server with vLLM-like timing and synthetic text."""

from aios_services.sim.engine import Engine, RealClock, VirtualClock
from aios_services.sim.profiles import PROFILES, EngineProfile, get_profile
from aios_services.sim.runner import SimServer, run_sim, serve

__all__ = [
    "PROFILES",
    "Engine",
    "EngineProfile",
    "RealClock",
    "SimServer",
    "VirtualClock",
    "get_profile",
    "run_sim",
    "serve",
]
