"""The services of one app instance, wired once in ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from backend.services.accounts import AccountService
from backend.services.agents import AgentRegistry, AgentService
from backend.services.alerts import AlertService
from backend.services.backups import BackupService
from backend.services.compaction import CompactionService
from backend.services.configs import ConfigService
from backend.services.cursors import CursorSigner
from backend.services.history import BackupHistory
from backend.services.inheritance import InheritanceService
from backend.services.leases import LeaseService
from backend.services.organisation_recovery import OrganisationRecoveryService
from backend.services.orphans import OrphanSweeper
from backend.services.pairing import PairingService
from backend.services.progress import ProgressService
from backend.services.pubsub import LiveEvents
from backend.services.recovery import RecoveryService
from backend.services.releases import ReleaseService
from backend.services.repo_checks import RepoCheckService
from backend.services.restore_jobs import RestoreJobService
from backend.services.restores import RestoreService
from backend.services.runs import RunService
from backend.services.snapshots import SnapshotService
from backend.services.tasks import PeriodicTasks
from backend.settings import Settings
from backend.storage import Storage

__all__ = ["Services", "make_storage"]


def make_storage(settings: Settings) -> Storage:
    """S3 when ``AWS_S3_BUCKET`` is set, else the local data directory (the embedded default)."""
    if settings.s3_bucket:
        from backend.storage import S3Storage

        return S3Storage(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
        )
    from backend.storage import LocalStorage

    return LocalStorage(
        root=settings.data_dir / "storage",
        base_url=settings.base_url,
        secret=settings.secret_key,
    )


@dataclass
class Services:
    settings: Settings
    storage: Storage
    registry: AgentRegistry
    accounts: AccountService
    agents: AgentService
    configs: ConfigService
    backups: BackupService
    progress: ProgressService
    snapshots: SnapshotService
    compaction: CompactionService
    checks: RepoCheckService
    recovery: RecoveryService
    organisation: OrganisationRecoveryService
    history: BackupHistory
    inheritance: InheritanceService
    restores: RestoreService
    live: LiveEvents
    runs: RunService
    leases: LeaseService
    alerts: AlertService
    tasks: PeriodicTasks
    cursors: CursorSigner
    pairing: PairingService
    restore_jobs: RestoreJobService
    releases: ReleaseService

    @classmethod
    def build(cls, settings: Settings, storage: Storage | None = None) -> Services:
        storage = storage or make_storage(settings)
        registry = AgentRegistry(settings)
        live = LiveEvents(settings)
        leases = LeaseService()
        alerts = AlertService(settings)
        agents = AgentService(settings, registry)
        backups = BackupService(settings, storage, live)
        sweeper = OrphanSweeper(storage, live)
        snapshots = SnapshotService(settings, storage, backups, leases)
        return cls(
            settings=settings,
            storage=storage,
            registry=registry,
            accounts=AccountService(settings),
            agents=agents,
            configs=ConfigService(settings, storage),
            backups=backups,
            progress=ProgressService(backups, live),
            snapshots=snapshots,
            compaction=CompactionService(settings, snapshots),
            checks=RepoCheckService(),
            recovery=RecoveryService(),
            organisation=OrganisationRecoveryService(),
            history=BackupHistory(),
            inheritance=InheritanceService(),
            restores=RestoreService(settings, storage),
            live=live,
            runs=RunService(settings, live, leases, sweeper),
            leases=leases,
            alerts=alerts,
            tasks=PeriodicTasks(
                settings, storage, leases=leases, alerts=alerts, live=live, sweeper=sweeper
            ),
            cursors=CursorSigner(settings.secret_key),
            pairing=PairingService(settings, agents),
            restore_jobs=RestoreJobService(live),
            releases=ReleaseService(settings, storage),
        )
