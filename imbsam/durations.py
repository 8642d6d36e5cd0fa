"""Durations as people read them, the same way in every message and report."""


def format_duration(seconds):
    """'45 s', '12.5 min', '3.4 h', or from two days on '2.3 days'; 'n/a' for None (not measured)."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
