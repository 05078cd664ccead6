"""Parameter table, dkim family (issue #5). See params_smtpd.py for the conventions."""

from __future__ import annotations

from ironpost.config.paramdef import Param

DKIM: tuple[Param, ...] = ()
