"""What the engine tells people about recovery, word for word the same wherever it is shown (the
command line, the tray, the log). Its own module, free of imports: the command line's help shows
``LOSS_WARNING`` without loading the recovery code."""

__all__ = ["LOSS_WARNING", "NOT_SET_UP"]

LOSS_WARNING = (
    "BackApp cannot read your backups. If you lose every machine and this code, the backups "
    "cannot be restored."
)
NOT_SET_UP = (
    "Recovery is not set up: run `backapp-agent recovery init` on one of your machines and keep "
    "the code it prints, or losing this machine loses its backups"
)
