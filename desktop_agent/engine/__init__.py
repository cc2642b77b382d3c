"""The BackApp backup engine: scan -> archive -> compress -> upload -> report, as a plain library.

No Qt here: the tray app, the ``backapp-agent`` command line and the server's own server-side mode all
drive this package (backups, and restores through ``Restorer``). The usual entry point::

    from desktop_agent.engine import BackupEngine, load_settings, KeyStore, config_dir

    settings = load_settings()
    key, _ = KeyStore(config_dir()).load(settings.server_url)
    with BackupEngine.from_settings(settings, key, events=print) as engine:
        result = engine.run()

``BackupEngine`` talks to two seams, ``ControlPlane`` (the agent API; ``ApiClient`` over HTTP) and
``Storage`` (PUTs to pre-signed URLs; ``HttpStorage``), so another process can plug in its own. The
seams and the wire types both sides share live in ``desktop_agent.engine.protocol``, the schedule
maths in ``desktop_agent.engine.schedule``; these three modules are the engine's public face, every
other module is private.

The names are loaded when first used (PEP 562): ``from desktop_agent.engine import Restorer`` imports
the restore code and what it needs, not the backup pipeline, the scheduler or the updater, so a short
command of ``backapp-agent`` starts in a fraction of the time. ``_EXPORTS`` says where each name
lives; type checkers read the same names from the imports under ``TYPE_CHECKING``.
"""

import typing as _typing

from desktop_agent._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from ._archive import archive_filename, archive_format, write_archive
    from ._cancel import CancelToken
    from ._compress import ArchiveFormat, archive_extension
    from ._engine import BackupEngine
    from ._errors import (
        AgentError,
        ApiError,
        AuthenticationError,
        BackupCancelled,
        ConfigurationError,
        ConflictError,
        IntegrityError,
        InvalidRecoveryCode,
        KeyStoreError,
        NetworkError,
        NotFoundError,
        RecoveryError,
        RepositoryKeyMissing,
        RestoreError,
        SourceError,
        StorageError,
        WrongRecoveryCode,
    )
    from ._events import (
        ArchiveProgress,
        BackupFailed,
        BackupFinished,
        ConfigStarted,
        Event,
        EventSink,
        FileFailed,
        FileStarted,
        ProgressCallbacks,
        RestoreFailed,
        RestoreFinished,
        RestoreProgress,
        RestoreSkipped,
        RestoreStarted,
        RunFinished,
        RunStarted,
        ScanFinished,
        ScanProgress,
        ScanStarted,
        UploadProgress,
        UploadResumed,
        UploadStarted,
        UploadWaiting,
        event_to_json,
    )
    from ._excludes import (
        DEFAULT_EXCLUDES,
        IGNORE_FILE,
        RuleSet,
        glob_to_regex,
        parse_rule,
        root_rules,
    )
    from ._job import printable
    from ._keystore import ENV_API_KEY, KeyLocation, KeyStore
    from ._notices import LOSS_WARNING, NOT_SET_UP
    from ._options import EngineOptions
    from ._parts import choose_part_size, split_sizes
    from ._recovery import (
        Continued,
        InheritedAgent,
        Issued,
        KdfParams,
        Recovery,
        RecoveryInfo,
        RecoveryKey,
        RecoveryPlane,
        WrappedRepoKey,
        format_code,
        keep_wrapped,
        new_recovery_code,
        parse_code,
        wrap_key,
    )
    from ._repo.access import SnapshotEntry, Snapshots
    from ._repo.compact import CompactResult
    from ._repo.compact_job import CompactDuty, RepoCompaction
    from ._repo.keys import RepoKeyStore
    from ._repo.organisation import OrganisationSnapshots
    from ._repo.proofs import DrillDuty, DrillSchedule, RepoProofs
    from ._restore import (
        MemberInfo,
        PathFilter,
        RestoreOptions,
        Restorer,
        RestoreResult,
        RestoreSource,
        check_member,
        default_target_name,
        member_path,
    )
    from ._scanner import ScanEntry, ScanResult, ScanTotals, check_sources, scan
    from ._scheduling import (
        AgentDaemon,
        Dispatcher,
        Job,
        ManualRun,
        Outcome,
        RestoreJobs,
        RetrySettings,
        Runner,
        Scheduler,
        ScheduleStore,
        Skipped,
        engine_restore,
        parallel_backups,
    )
    from ._settings import (
        MAX_PARALLEL_BACKUPS,
        AgentSettings,
        config_dir,
        instances_dir,
        load_settings,
        parse_size,
        save_settings,
    )
    from ._state import StateStore, last_completed_at
    from ._tar import Archiver, ArchiveStats, member_name, tar_header
    from ._transport.bandwidth import BandwidthControl, agent_bandwidth
    from ._transport.client import API_KEY_HEADER, ApiClient
    from ._transport.pairing import PairedAgent, redeem_pairing_code
    from ._transport.redact import install_log_redaction, redact_url
    from ._transport.retry import RetryPolicy, parse_retry_after
    from ._transport.socket import AgentSocket, websocket_url
    from ._transport.storage import HttpStorage
    from ._transport.throttle import Throttle
    from ._update import UpdateDuty, Updater, UpdateResult, offer_from
    from ._upload import Uploader, UploadOptions, UploadResult
    from .protocol import (
        BackupInfo,
        BackupOptions,
        BackupResult,
        ConfigInfo,
        ControlPlane,
        Destination,
        FileError,
        Heartbeat,
        Lease,
        RestoreTicket,
        RunRequest,
        RunResult,
        Source,
        Storage,
        UpdateOffer,
    )
    from .schedule import local_timezone_name, parse_stored_schedule

#: Each module (relative to this package) and the names it exports here, space-separated.
_EXPORTS: dict[str, str] = {
    "._archive": "archive_filename archive_format write_archive",
    "._cancel": "CancelToken",
    "._compress": "ArchiveFormat archive_extension",
    "._engine": "BackupEngine",
    "._errors": (
        "AgentError ApiError AuthenticationError BackupCancelled ConfigurationError ConflictError "
        "IntegrityError InvalidRecoveryCode KeyStoreError NetworkError NotFoundError RecoveryError "
        "RepositoryKeyMissing RestoreError SourceError StorageError WrongRecoveryCode"
    ),
    "._events": (
        "ArchiveProgress BackupFailed BackupFinished ConfigStarted Event EventSink FileFailed "
        "FileStarted ProgressCallbacks RestoreFailed RestoreFinished RestoreProgress "
        "RestoreSkipped RestoreStarted RunFinished RunStarted ScanFinished ScanProgress "
        "ScanStarted UploadProgress UploadResumed UploadStarted UploadWaiting event_to_json"
    ),
    "._excludes": "DEFAULT_EXCLUDES IGNORE_FILE RuleSet glob_to_regex parse_rule root_rules",
    "._job": "printable",
    "._keystore": "ENV_API_KEY KeyLocation KeyStore",
    "._notices": "LOSS_WARNING NOT_SET_UP",
    "._options": "EngineOptions",
    "._parts": "choose_part_size split_sizes",
    "._recovery": (
        "Continued InheritedAgent Issued KdfParams Recovery RecoveryInfo "
        "RecoveryKey RecoveryPlane WrappedRepoKey format_code keep_wrapped new_recovery_code "
        "parse_code wrap_key"
    ),
    "._repo.access": "SnapshotEntry Snapshots",
    "._repo.compact": "CompactResult",
    "._repo.compact_job": "CompactDuty RepoCompaction",
    "._repo.keys": "RepoKeyStore",
    "._repo.organisation": "OrganisationSnapshots",
    "._repo.proofs": "DrillDuty DrillSchedule RepoProofs",
    "._restore": (
        "MemberInfo PathFilter RestoreOptions Restorer RestoreResult RestoreSource check_member "
        "default_target_name member_path"
    ),
    "._scanner": "ScanEntry ScanResult ScanTotals check_sources scan",
    "._scheduling": (
        "AgentDaemon Dispatcher Job ManualRun Outcome RestoreJobs RetrySettings Runner Scheduler "
        "ScheduleStore Skipped engine_restore parallel_backups"
    ),
    "._settings": (
        "MAX_PARALLEL_BACKUPS AgentSettings config_dir instances_dir load_settings parse_size "
        "save_settings"
    ),
    "._state": "StateStore last_completed_at",
    "._tar": "Archiver ArchiveStats member_name tar_header",
    "._transport.bandwidth": "BandwidthControl agent_bandwidth",
    "._transport.client": "API_KEY_HEADER ApiClient",
    "._transport.pairing": "PairedAgent redeem_pairing_code",
    "._transport.redact": "install_log_redaction redact_url",
    "._transport.retry": "RetryPolicy parse_retry_after",
    "._transport.socket": "AgentSocket websocket_url",
    "._transport.storage": "HttpStorage",
    "._transport.throttle": "Throttle",
    "._update": "UpdateDuty Updater UpdateResult offer_from",
    "._upload": "Uploader UploadOptions UploadResult",
    ".protocol": (
        "BackupInfo BackupOptions BackupResult ConfigInfo ControlPlane Destination FileError "
        "Heartbeat Lease RestoreTicket RunRequest RunResult Source Storage UpdateOffer"
    ),
    ".schedule": "local_timezone_name parse_stored_schedule",
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names.split()}

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_EXCLUDES",
    "ENV_API_KEY",
    "IGNORE_FILE",
    "LOSS_WARNING",
    "MAX_PARALLEL_BACKUPS",
    "NOT_SET_UP",
    "AgentDaemon",
    "AgentError",
    "AgentSettings",
    "AgentSocket",
    "ApiClient",
    "ApiError",
    "ArchiveFormat",
    "ArchiveProgress",
    "ArchiveStats",
    "Archiver",
    "AuthenticationError",
    "BackupCancelled",
    "BackupEngine",
    "BackupFailed",
    "BackupFinished",
    "BackupInfo",
    "BackupOptions",
    "BackupResult",
    "BandwidthControl",
    "CancelToken",
    "CompactDuty",
    "CompactResult",
    "ConfigInfo",
    "ConfigStarted",
    "ConfigurationError",
    "ConflictError",
    "Continued",
    "ControlPlane",
    "Destination",
    "Dispatcher",
    "DrillDuty",
    "DrillSchedule",
    "EngineOptions",
    "Event",
    "EventSink",
    "FileError",
    "FileFailed",
    "FileStarted",
    "Heartbeat",
    "HttpStorage",
    "InheritedAgent",
    "IntegrityError",
    "InvalidRecoveryCode",
    "Issued",
    "Job",
    "KdfParams",
    "KeyLocation",
    "KeyStore",
    "KeyStoreError",
    "Lease",
    "ManualRun",
    "MemberInfo",
    "NetworkError",
    "NotFoundError",
    "OrganisationSnapshots",
    "Outcome",
    "PairedAgent",
    "PathFilter",
    "ProgressCallbacks",
    "Recovery",
    "RecoveryError",
    "RecoveryInfo",
    "RecoveryKey",
    "RecoveryPlane",
    "RepoCompaction",
    "RepoKeyStore",
    "RepoProofs",
    "RepositoryKeyMissing",
    "RestoreError",
    "RestoreFailed",
    "RestoreFinished",
    "RestoreJobs",
    "RestoreOptions",
    "RestoreProgress",
    "RestoreResult",
    "RestoreSkipped",
    "RestoreSource",
    "RestoreStarted",
    "RestoreTicket",
    "Restorer",
    "RetryPolicy",
    "RetrySettings",
    "RuleSet",
    "RunFinished",
    "RunRequest",
    "RunResult",
    "RunStarted",
    "Runner",
    "ScanEntry",
    "ScanFinished",
    "ScanProgress",
    "ScanResult",
    "ScanStarted",
    "ScanTotals",
    "ScheduleStore",
    "Scheduler",
    "Skipped",
    "SnapshotEntry",
    "Snapshots",
    "Source",
    "SourceError",
    "StateStore",
    "Storage",
    "StorageError",
    "Throttle",
    "UpdateDuty",
    "UpdateOffer",
    "UpdateResult",
    "Updater",
    "UploadOptions",
    "UploadProgress",
    "UploadResult",
    "UploadResumed",
    "UploadStarted",
    "UploadWaiting",
    "Uploader",
    "WrappedRepoKey",
    "WrongRecoveryCode",
    "agent_bandwidth",
    "archive_extension",
    "archive_filename",
    "archive_format",
    "check_member",
    "check_sources",
    "choose_part_size",
    "config_dir",
    "default_target_name",
    "engine_restore",
    "event_to_json",
    "format_code",
    "glob_to_regex",
    "install_log_redaction",
    "instances_dir",
    "keep_wrapped",
    "last_completed_at",
    "load_settings",
    "local_timezone_name",
    "member_name",
    "member_path",
    "new_recovery_code",
    "offer_from",
    "parallel_backups",
    "parse_code",
    "parse_retry_after",
    "parse_rule",
    "parse_size",
    "parse_stored_schedule",
    "printable",
    "redact_url",
    "redeem_pairing_code",
    "root_rules",
    "save_settings",
    "scan",
    "split_sizes",
    "tar_header",
    "websocket_url",
    "wrap_key",
    "write_archive",
]


__getattr__, __dir__ = _lazy_exports(__name__, _WHERE, __all__)
