"""``scanflow console``: the interactive agent console (Textual).

Modules: :mod:`.link` (connection, heartbeats, events; no Textual),
:mod:`.commands` (the prompt's grammar and completion), :mod:`.app` (the
application and its guard), :mod:`.failures` (the error log), the screens
(:mod:`.main_screen`, :mod:`.agent_screen`, :mod:`.chain_screen`,
:mod:`.approvals_screen`, :mod:`.help_screen`), :mod:`.tables` (width-filling
tables, state colours), :mod:`.widgets` and the styles in ``console.tcss``.
"""
