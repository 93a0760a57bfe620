"""Embedded dev mode (``mailsvc dev``): Tansu broker, local mail catcher and the three services.

Modules: ``tansu`` (broker command and topic set-up), ``catcher`` (SMTP -> .eml files),
``supervisor`` (child processes that stop together), ``runner`` (wires them up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["run_dev"]


def run_dev(settings: Settings, http_base_port: int = 8101) -> int:
    """Run broker, catcher and services until Ctrl-C; return the process exit code.

    Imported lazily so ``python -m shared.dev.catcher`` stays light.
    """
    from shared.dev.runner import run_dev as _run_dev

    return _run_dev(settings, http_base_port)
