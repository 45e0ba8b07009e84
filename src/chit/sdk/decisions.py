"""Decision logging: one structured ``logging`` record per authorization decision.

Records go to the ``chit.decisions`` logger. Besides the message, each carries the attributes a
structured formatter (JSON logs) picks up: ``decision`` (``allow``, ``deny`` or ``reject`` for a token
refused before any permission was asked), ``subject``, ``client_id``, ``actors`` (the delegation chain,
current actor first), ``permission``, ``reason`` and ``token_id``. Allows are logged at DEBUG and
denials at INFO by default; the level check comes first, so a disabled level costs next to nothing.
"""

from __future__ import annotations

import logging

from chit.policy.decisions import Decision
from chit.policy.principals import Principal

DECISION_LOGGER = "chit.decisions"


class DecisionLog:
    def __init__(
        self,
        logger: logging.Logger | str = DECISION_LOGGER,
        *,
        allow_level: int = logging.DEBUG,
        deny_level: int = logging.INFO,
        reject_level: int = logging.INFO,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.allow_level = allow_level
        self.deny_level = deny_level
        self.reject_level = reject_level

    def __call__(self, principal: Principal, decision: Decision) -> None:
        level = self.allow_level if decision.allowed else self.deny_level
        if self.logger.isEnabledFor(level):
            self._log(level, "allow" if decision.allowed else "deny", decision.permission, decision.reason, principal)

    def logs_allows(self) -> bool:
        return self.logger.isEnabledFor(self.allow_level)

    def rejected(self, reason: str, principal: Principal | None = None) -> None:
        if self.logger.isEnabledFor(self.reject_level):
            self._log(self.reject_level, "reject", None, reason, principal)

    def _log(self, level: int, verdict: str, permission: str | None, reason: str, principal: Principal | None) -> None:
        actors = [actor.name for actor in principal.actors] if principal is not None else []
        subject = principal.subject if principal is not None else None
        via = f" via {' <- '.join(actors)}" if actors else ""
        self.logger.log(
            level,
            "%s %s for %s%s: %s",
            verdict,
            permission or "-",
            subject or "-",
            via,
            reason,
            extra={
                "decision": verdict,
                "subject": subject,
                "client_id": principal.client_id if principal is not None else None,
                "actors": actors,
                "permission": permission,
                "reason": reason,
                "token_id": principal.token_id if principal is not None else None,
            },
        )
