"""Tray icons, one per ``Health``, drawn with ``QPainter`` (no image files to ship): a rounded badge
whose colour and glyph tell the state at a glance, also for colour-blind users (the glyph differs)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

from ._status import Health

__all__ = ["COLOURS", "health_icon", "health_pixmap"]

COLOURS: dict[Health, str] = {
    Health.IDLE: "#2e7d32",  # green: all good
    Health.BUSY: "#1565c0",  # blue: backing up
    Health.PAUSED: "#757575",  # grey: paused
    Health.ATTENTION: "#e65100",  # orange: look at me
    Health.UNPAIRED: "#9e9e9e",
}


def health_pixmap(health: Health, size: int = 64) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(COLOURS[health]))
    p.drawRoundedRect(QRectF(s * 0.04, s * 0.04, s * 0.92, s * 0.92), s * 0.22, s * 0.22)
    pen = QPen(QColor("white"), s * 0.1)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    if health is Health.IDLE:  # a check mark
        path = QPainterPath(QPointF(s * 0.27, s * 0.52))
        path.lineTo(s * 0.43, s * 0.68)
        path.lineTo(s * 0.74, s * 0.34)
        p.drawPath(path)
    elif health is Health.BUSY:  # an upward arrow
        p.drawLine(QPointF(s * 0.5, s * 0.75), QPointF(s * 0.5, s * 0.27))
        path = QPainterPath(QPointF(s * 0.3, s * 0.45))
        path.lineTo(s * 0.5, s * 0.25)
        path.lineTo(s * 0.7, s * 0.45)
        p.drawPath(path)
    elif health is Health.PAUSED:  # two bars
        p.drawLine(QPointF(s * 0.38, s * 0.3), QPointF(s * 0.38, s * 0.7))
        p.drawLine(QPointF(s * 0.62, s * 0.3), QPointF(s * 0.62, s * 0.7))
    elif health is Health.ATTENTION:  # an exclamation mark
        p.drawLine(QPointF(s * 0.5, s * 0.24), QPointF(s * 0.5, s * 0.56))
        p.drawPoint(QPointF(s * 0.5, s * 0.76))
    else:  # unpaired: a dash
        p.drawLine(QPointF(s * 0.3, s * 0.5), QPointF(s * 0.7, s * 0.5))
    p.end()
    return pixmap


_cache: dict[Health, QIcon] = {}


def health_icon(health: Health) -> QIcon:
    if health not in _cache:
        icon = QIcon()
        for size in (16, 22, 32, 64):
            icon.addPixmap(health_pixmap(health, size))
        _cache[health] = icon
    return _cache[health]
