"""``scanflow console``: the interactive agent console (Textual).

Modules: :mod:`.link` (connection, heartbeats, events; no Textual),
:mod:`.commands` (the prompt's grammar, completion, argument checks),
:mod:`.app` (the application), the screens (:mod:`.main_screen`,
:mod:`.agent_screen`, :mod:`.chain_screen`, :mod:`.approvals_screen`,
:mod:`.help_screen`), :mod:`.widgets` and the styles in ``console.tcss``.
"""
