"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic, tests)."""

from atelier.agents.models import Agent, AgentVersion
from atelier.budgets.models import Budget, BudgetPeriod, BudgetReservation
from atelier.conversations.models import Conversation, Message
from atelier.db.base import Base
from atelier.idempotency.models import IdempotentRequest
from atelier.llm.models import CatalogModel
from atelier.runs.models import Approval, Run, RunFileBackup
from atelier.tenants.models import (
    ApiKey,
    CorsOrigin,
    IdentityProvider,
    Tenant,
    TokenRevocation,
)
from atelier.usage.models import UsageRecord
from atelier.webhooks.models import Webhook, WebhookDelivery
from atelier.workspace.models import ConversationFile, StorageCleanup

__all__ = [
    "Agent",
    "AgentVersion",
    "ApiKey",
    "Approval",
    "Base",
    "Budget",
    "BudgetPeriod",
    "BudgetReservation",
    "CatalogModel",
    "Conversation",
    "ConversationFile",
    "CorsOrigin",
    "IdempotentRequest",
    "IdentityProvider",
    "Message",
    "Run",
    "RunFileBackup",
    "StorageCleanup",
    "Tenant",
    "TokenRevocation",
    "UsageRecord",
    "Webhook",
    "WebhookDelivery",
]
