"""Message authentication: SPF, DKIM (verify and sign), DMARC, ARC, Authentication-Results.

The result types every part shares live in :mod:`ironpost.auth.types`; libraries that
only do blocking DNS (pyspf, dkimpy) reach ironpost's resolver through
:mod:`ironpost.auth.dnsbridge`.
"""
