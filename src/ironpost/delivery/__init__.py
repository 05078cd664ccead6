"""Delivery agents: local Maildir delivery driven from the queue.

``deliver_to_maildir`` owns the on-disk Maildir protocol; ``DeliveryRunner`` owns the
claim -> deliver -> record loop and the Postfix-format delivery log lines.
"""

from ironpost.delivery.maildir import deliver_to_maildir
from ironpost.delivery.runner import DeliveryRunner

__all__ = ["DeliveryRunner", "deliver_to_maildir"]
