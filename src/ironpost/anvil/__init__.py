"""ironpost's anvil: per-client rate limits, AUTH failure throttling and bans, per-login
sending limits, in memory for one process (Postfix's anvil(8) is the model).

Owns the policy (:class:`Anvil`), its settings (:class:`AnvilConfig`) and the counting
primitive (:class:`RateTable`, a slotted sliding window per key). The stores sit behind
:class:`RateStore` and :class:`BanStore` so that a shared store can replace them later.
The caller decides exemptions (``smtpd_client_event_limit_exceptions``) and replies.
"""

from ironpost.anvil.config import AnvilConfig, SettingsLike
from ironpost.anvil.limits import LOGIN_KEY_MAX, Anvil, BanList, BanStore, login_key
from ironpost.anvil.rates import DEFAULT_MAX_KEYS, DEFAULT_SLOTS, RateStore, RateTable, slot_width

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_SLOTS",
    "LOGIN_KEY_MAX",
    "Anvil",
    "AnvilConfig",
    "BanList",
    "BanStore",
    "RateStore",
    "RateTable",
    "SettingsLike",
    "login_key",
    "slot_width",
]
