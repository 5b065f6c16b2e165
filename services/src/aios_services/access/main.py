"""`python -m aios_services.access`: open the identities (DuckDB) and KV `AIOS_ACCESS`, make the bus's
users current (the agents added and not revoked), and serve `ctl.access.*` to the operator."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from aios_schemas import (
    AgentAdd,
    AgentGroups,
    AgentList,
    AgentRevoke,
    ApprovalDecide,
    ApprovalList,
    GroupAdd,
    GroupList,
    RuleAdd,
    RuleList,
    RuleRemove,
)

from ..runtime import Bus, HealthDetails, main_for
from ..runtime.exclusive import exclusive
from ..runtime.service import load_settings
from .bususers import BusUsers
from .handlers import AccessHandlers
from .settings import AccessSettings
from .store import Identities

log = logging.getLogger(__name__)


async def start(bus: Bus, stack: AsyncExitStack, settings: AccessSettings) -> HealthDetails:
    ns = bus.ns
    kv = await bus.ensure_kv(ns.access_bucket)
    ids = Identities(settings.access_db)
    stack.callback(ids.close)
    s = settings
    users = None
    if s.access_nats_config and s.access_nats_users and s.access_nats_agents and s.access_nats_pid:
        users = BusUsers(
            s.nats_url,
            s.access_nats_config,
            s.access_nats_users,
            s.access_nats_agents,
            s.access_nats_pid,
            server_name=s.access_nats_server_name,
            timeout_s=s.reload_timeout_s,
        )
    h = AccessHandlers(bus, kv, ids, users)
    if users is not None and await asyncio.to_thread(ids.live_hashes) != []:
        await h.sync_bus_users()  # the config `aios up` wrote may predate the last change
    q = "access"
    await bus.serve(ns.ctl("access", "agent_add"), AgentAdd, h.agent_add, queue=q)
    await bus.serve(ns.ctl("access", "agent_list"), AgentList, h.agent_list, queue=q)
    await bus.serve(ns.ctl("access", "agent_revoke"), AgentRevoke, h.agent_revoke, queue=q)
    await bus.serve(ns.ctl("access", "agent_groups"), AgentGroups, h.agent_groups, queue=q)
    await bus.serve(ns.ctl("access", "group_add"), GroupAdd, h.group_add, queue=q)
    await bus.serve(ns.ctl("access", "group_list"), GroupList, h.group_list, queue=q)
    await bus.serve(ns.ctl("access", "rule_add"), RuleAdd, h.rule_add, queue=q)
    await bus.serve(ns.ctl("access", "rule_list"), RuleList, h.rule_list, queue=q)
    await bus.serve(ns.ctl("access", "rule_rm"), RuleRemove, h.rule_remove, queue=q)
    await bus.serve(ns.ctl("access", "approvals"), ApprovalList, h.approvals, queue=q)
    await bus.serve(ns.ctl("access", "decide"), ApprovalDecide, h.decide, queue=q)
    return lambda: {"manages_bus_users": users is not None}


def main() -> None:
    settings = load_settings("access", AccessSettings)
    # One active replica (its DuckDB file is one), others standing by (runtime/exclusive.py).
    main_for(
        "access",
        settings,
        exclusive(
            "access",
            settings.instance,
            settings.partition_ttl_s,
            lambda bus, stack: start(bus, stack, settings),
        ),
    )


if __name__ == "__main__":
    main()
