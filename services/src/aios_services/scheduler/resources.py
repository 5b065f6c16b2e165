"""The one mapping from a syscall to the resource it competes for, and the catalogue of resources.

A *resource* is what a policy queue orders calls for (`llm.<model>`; later `tools.<tool>`,
`memory`, `files`); its capacity is the slots of the *lanes* that serve it (for a model: its
backends; for a tool: its `max_concurrency`; for memory or storage: the service's concurrency).
Policies and dispatch see resources and lanes only; what a kind of syscall means is said here, once.
A new syscall family plugs in by adding a `ResourceKind` to `KINDS` and publishing its lanes in the
catalogue: the dispatch loop does not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pydantic import JsonValue

from aios_schemas import AiosError, BackendEntry, LlmChat, LlmEmbed, Syscall, ToolsCall


@dataclass(frozen=True)
class ResourceRef:
    """Which resource a syscall needs and which worker service runs it."""

    name: str  # policy queue and catalogue key, e.g. "llm.my-model"
    service: str  # the worker service that executes it, e.g. "llm"
    label: str  # what agents call it, for error messages (the model name)


class ResourceKind(Protocol):
    """How one family of syscalls (the part of `kind` before the dot) maps onto resources."""

    service: str
    noun: str  # what one resource of this family is called in errors ("model", "tool")

    def ref(self, call: Syscall) -> ResourceRef: ...

    def cost(self, call: Syscall, ratios: TokenRatios) -> int:
        """Tokens the call may use: reserved against token quotas and tokens/min budgets."""
        ...


class LlmKind:
    service = "llm"
    noun = "model"

    def ref(self, call: Syscall) -> ResourceRef:
        model = _llm(call).model
        return ResourceRef(name=f"llm.{model}", service=self.service, label=model)

    def cost(self, call: Syscall, ratios: TokenRatios) -> int:
        # The prompt's characters over the model's learned characters a token, plus the output cap
        # (what vLLM reserves, and what hosted APIs count against tokens a minute).
        p = _llm(call)
        per = ratios.of(call_model(call))
        if isinstance(p, LlmChat):
            return int(prompt_chars(p) / per) + (p.max_tokens or 256)
        return int(sum(len(t) for t in p.input) / per)


def prompt_chars(p: LlmChat) -> int:
    return sum(len(m.content or "") for m in p.messages)


def call_model(call: Syscall) -> str:
    return _llm(call).model


class TokenRatios:
    """Characters per prompt token of each model, learned from the `prompt_tokens` its backends
    report (a moving average), so the kernel's estimate of a call's tokens follows the model's own
    tokenizer: a tokens/min budget estimated at a fixed 4 characters a token is either exceeded
    (429s) or left unused, by as much as the text differs from English prose (code, other
    languages, long generated words). Starts at 4. The template's own tokens (role markers, tool
    schemas) count in `prompt_tokens` and not in the characters, which errs on the safe side."""

    DEFAULT = 4.0
    WEIGHT = 0.1  # of each new sample
    BOUNDS = (1.0, 12.0)

    def __init__(self) -> None:
        self.ratio: dict[str, float] = {}

    def of(self, model: str) -> float:
        return self.ratio.get(model, self.DEFAULT)

    def learn(self, model: str, chars: int, tokens: int) -> None:
        if chars <= 0 or tokens <= 0:
            return
        lo, hi = self.BOUNDS
        sample = min(hi, max(lo, chars / tokens))
        old = self.ratio.get(model)
        self.ratio[model] = sample if old is None else old + self.WEIGHT * (sample - old)


def _llm(call: Syscall) -> LlmChat | LlmEmbed:
    p = call.payload
    if not isinstance(p, LlmChat | LlmEmbed):  # family() maps only llm.* kinds here: a kernel bug
        raise AiosError("internal", f"{call.kind} is not an llm syscall")
    return p


class ServiceKind:
    """A family served as one resource by one worker service (memory, files): its syscalls cost no
    tokens; fairness among agents is the policy's, capacity the service's published slots."""

    def __init__(self, resource: str, service: str) -> None:
        self.resource = resource
        self.service = service
        self.noun = resource

    def ref(self, call: Syscall) -> ResourceRef:
        return ResourceRef(name=self.resource, service=self.service, label=self.resource)

    def cost(self, call: Syscall, ratios: TokenRatios) -> int:
        return 0


class ToolsKind(ServiceKind):
    """Each tool is its own resource (`tools.<name>`), so its `max_concurrency` is the capacity of
    its queue (calls beyond it wait, they do not fail); `tools.list` is the service's own `tools`."""

    def __init__(self) -> None:
        super().__init__("tools", "tools")
        self.noun = "tool"

    def ref(self, call: Syscall) -> ResourceRef:
        p = call.payload
        if isinstance(p, ToolsCall):
            return ResourceRef(name=f"tools.{p.name}", service=self.service, label=p.name)
        return super().ref(call)


KINDS: dict[str, ResourceKind] = {
    "llm": LlmKind(),
    "memory": ServiceKind("memory", "memory"),
    "files": ServiceKind("files", "storage"),
    "tools": ToolsKind(),
}


def family(call: Syscall) -> ResourceKind:
    kind = KINDS.get(call.kind.split(".", 1)[0])
    if kind is None:  # the schema knows the kind but no scheduler mapping does: a kernel bug
        raise AiosError("internal", f"the scheduler has no resource mapping for {call.kind}")
    return kind


def resource_of(call: Syscall) -> ResourceRef:
    return family(call).ref(call)


def cost_of(call: Syscall, ratios: TokenRatios) -> int:
    return family(call).cost(call, ratios)


class Catalog:
    """The lanes of every known resource, as the worker services publish them."""

    def __init__(self) -> None:
        self.lanes: dict[str, list[BackendEntry]] = {}
        self.approval: set[str] = set()  # resources whose every call waits for an operator
        self.ratios = TokenRatios()  # how each model's tokenizer counts: for token estimates

    def set(self, resource: str, lanes: Iterable[BackendEntry]) -> None:
        self.lanes[resource] = list(lanes)

    def remove(self, resource: str) -> None:
        self.lanes.pop(resource, None)

    def get(self, resource: str) -> list[BackendEntry] | None:
        return self.lanes.get(resource)

    def known(self, service: str) -> bool:
        """Whether any worker of `service` has published its catalogue yet."""
        resources = {
            k.resource for k in KINDS.values() if isinstance(k, ServiceKind) and k.service == service
        }
        return any(name.startswith(service + ".") or name in resources for name in self.lanes)

    def unknown(self, ref: ResourceRef) -> AiosError:
        noun = family_of_service(ref.service).noun
        names: list[JsonValue] = [
            n.split(".", 1)[1] for n in sorted(self.lanes) if n.startswith(ref.service + ".")
        ]
        return AiosError("not_found", f"unknown {noun} {ref.label!r}", details={f"{noun}s": names})


def family_of_service(service: str) -> ResourceKind:
    return next(k for k in KINDS.values() if k.service == service)
