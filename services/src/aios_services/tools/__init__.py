"""The tools service: a registry of tools (built-ins, Python functions, MCP servers' tools, external
workers), each run isolated from the service, with its schemas, timeout, memory limit and concurrency.

Deliberately re-exports nothing: the sandbox's worker processes import `aios_services.tools.runner`
and the built-ins, and must stay small (their address space is what a tool's memory limit counts).
Import from the modules: `tools.main`, `tools.settings`, `tools.registry`, `tools.sandbox`.
"""
