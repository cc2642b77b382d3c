"""The service layer: everything the HTTP controllers and the CLI do, with no HTTP in it."""

from backend.services.accounts import AccountService, CurrentUser, SignedIn
from backend.services.agents import AgentIdentity, AgentRegistry, AgentService
from backend.services.backups import BackupService
from backend.services.configs import ConfigService
from backend.services.container import Services
from backend.services.history import BackupHistory
from backend.services.restores import RestoreService

__all__ = [
    "AccountService",
    "AgentIdentity",
    "AgentRegistry",
    "AgentService",
    "BackupHistory",
    "BackupService",
    "ConfigService",
    "CurrentUser",
    "RestoreService",
    "Services",
    "SignedIn",
]
