"""The agent's HTTP seams: the control plane (BackApp's agent API) and the storage (pre-signed URLs).

``ApiClient`` (``client``) and ``HttpStorage`` (``storage``) implement the ``ControlPlane`` and
``Storage`` protocols of ``desktop_agent.engine.protocol`` over httpx; a server that runs the engine
in-process implements them directly against its services. Both httpx clients take an injectable
``transport``, so unit tests run against ``httpx.MockTransport``. ``AgentSocket`` (``socket``) keeps the
agent's WebSocket open; ``retry`` says what is worth trying again and how long to wait; ``redact``
keeps pre-signed URLs out of logs.

The API key goes only to the BackApp server (``X-Agent-API-Key``), never to storage. Pre-signed URLs
are logged and put into error messages without their query string (``redact_url``): the query *is*
the credential.
"""
