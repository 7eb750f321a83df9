"""Time units of the simulated course and the site's wall clock.

Every charted time is an aware datetime in the site timezone (Asia/Shanghai); ``at``
builds one from a day and a wall-clock time, the unit constants step through the course.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from cart_etl.synth.model import SITE_TZ

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def wall_time(day: date, hh: int, mm: int) -> datetime:
    """``day`` at ``hh:mm`` site wall time."""
    return datetime.combine(day, time(hh, mm), tzinfo=SITE_TZ)
