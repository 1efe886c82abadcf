"""The online client: the server interface, the uploader process, login and ``mlop sync``.

Nothing here is imported by ``import mlop``: the training process only loads :mod:`mlop._online._client`
when a run is online, and httpx is imported by the modules that talk to the server, which run in the
uploader process or the CLI.
"""

from __future__ import annotations
