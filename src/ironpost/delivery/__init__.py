"""Delivery: the queue manager and the transports it hands mail to.

``manager.QueueManager`` owns the claim -> route -> deliver -> record loop and the
Postfix-format delivery log lines; ``transport`` is the contract every agent meets;
``local`` (Maildir, discard, error), ``smtp`` (SMTP and LMTP clients) are the agents;
``bounce`` and ``notices`` build and queue DSNs; ``assemble`` wires them from main.cf.
"""

from ironpost.delivery.maildir import deliver_to_maildir

__all__ = ["deliver_to_maildir"]
