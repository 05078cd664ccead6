"""ironpost configuration: Postfix-compatible main.cf/master.cf, one parameter table,
typed frozen settings and lookup tables.

Owns everything between the files on disk and the :class:`Settings` object each
component receives. Config flows one way: files -> entries -> validated Settings ->
constructors; no component reads globals. Entry point: :func:`load`.
"""

from __future__ import annotations

from ironpost.config.diagnostics import ConfigError, Diagnostic
from ironpost.config.embedded import default_data_dir, embedded_main_cf, embedded_master_cf
from ironpost.config.loader import LoadedConfig, load, load_texts
from ironpost.config.master import Service, interface_addresses
from ironpost.config.params import PARAMS, Param, render_table_markdown
from ironpost.config.restrictions import (
    NOT_YET_IMPLEMENTED,
    RESTRICTION_ARITY,
    parse_restrictions,
)
from ironpost.config.settings import Settings
from ironpost.config.tables import LookupTable, TableError, open_table

__all__ = [
    "NOT_YET_IMPLEMENTED",
    "PARAMS",
    "RESTRICTION_ARITY",
    "ConfigError",
    "Diagnostic",
    "LoadedConfig",
    "LookupTable",
    "Param",
    "Service",
    "Settings",
    "TableError",
    "default_data_dir",
    "embedded_main_cf",
    "embedded_master_cf",
    "interface_addresses",
    "load",
    "load_texts",
    "open_table",
    "parse_restrictions",
    "render_table_markdown",
]
