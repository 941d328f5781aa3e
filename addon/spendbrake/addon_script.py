"""Entry point for ``mitmdump -s "$(spendbrake addon-path)"`` (and mitmweb likewise).

Settings are mitmproxy options: ``--set spendbrake_config=FILE``, ``--set spendbrake_ledger=PATH``.
"""

from spendbrake.mitm import spendbrake_addons

addons = spendbrake_addons()
