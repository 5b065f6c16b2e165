"""The access service: identities (agents added and revoked at run time), privilege groups, rules,
operators' decisions on approvals, and the audit events of all of these."""
