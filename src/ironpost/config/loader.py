"""Loading a configuration directory (or the embedded default) into a LoadedConfig.

Owns :func:`load`: read main.cf (required) and master.cf (optional), build the
settings and the services, collect every diagnostic, and raise
:class:`ConfigError` if any is an error. One code path for files on disk and
for the embedded default (whose texts are parsed like files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ironpost.config.diagnostics import ConfigError, Diagnostic, sort_key
from ironpost.config.embedded import (
    EMBEDDED_DIR,
    default_data_dir,
    embedded_main_cf,
    embedded_master_cf,
)
from ironpost.config.master import Service, build_services, parse_master_cf
from ironpost.config.params import is_list_param
from ironpost.config.settings import Settings, build_settings
from ironpost.config.syntax import parse_main_cf


@dataclass(frozen=True)
class LoadedConfig:
    """The result of :func:`load`; ``diagnostics`` holds the warnings (no errors)."""

    settings: Settings
    services: tuple[Service, ...]
    diagnostics: tuple[Diagnostic, ...]
    config_dir: Path | None

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")


def load(config_dir: Path | None, *, data_dir: Path | None = None) -> LoadedConfig:
    """Load ``config_dir`` (None: the embedded default, data under ``data_dir``)."""
    if config_dir is None:
        data = data_dir if data_dir is not None else default_data_dir()
        return load_texts(
            embedded_main_cf(data),
            embedded_master_cf(),
            main_file=f"{EMBEDDED_DIR}/main.cf",
            master_file=f"{EMBEDDED_DIR}/master.cf",
            config_dir=None,
        )
    config_dir = Path(config_dir)
    main_path, master_path = config_dir / "main.cf", config_dir / "master.cf"
    try:
        main_text = main_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            [Diagnostic("error", str(main_path), 0, f"cannot read: {exc.strerror or exc}")]
        ) from None
    try:
        master_text: str | None = master_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        master_text = None
    except OSError as exc:
        raise ConfigError(
            [Diagnostic("error", str(master_path), 0, f"cannot read: {exc.strerror or exc}")]
        ) from None
    return load_texts(
        main_text,
        master_text,
        main_file=str(main_path),
        master_file=str(master_path),
        config_dir=config_dir,
    )


def load_texts(
    main_text: str,
    master_text: str | None,
    *,
    main_file: str,
    master_file: str,
    config_dir: Path | None,
) -> LoadedConfig:
    """Load from texts (``master_text`` None: one ``smtp`` service on inet_interfaces)."""
    entries, diags = parse_main_cf(main_text, main_file, is_list=is_list_param)
    settings, found = build_settings(entries, base=config_dir)
    diags.extend(found)
    if master_text is None:
        services = [Service("smtp", None, 25, {}, settings, "(default)")]
    else:
        lines, found = parse_master_cf(master_text, master_file)
        diags.extend(found)
        services, found = build_services(lines, settings)
        diags.extend(found)
    diags.sort(key=sort_key)
    if any(d.is_error for d in diags):
        raise ConfigError(diags)
    return LoadedConfig(settings, tuple(services), tuple(diags), config_dir)
