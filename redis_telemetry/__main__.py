"""``python -m redis_telemetry`` runs the ``redis-telemetry`` command."""

from .cli import run

run()
