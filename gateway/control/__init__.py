"""The control plane on the bus: commands every replica answers (``cmn status``), over ``cmn.control``.

The messages are part of the wire contract: gateway/envelope/control.py.

registry.py    command types -> their model, whether they change state, and what runs them
responder.py   what each gateway runs per transport: check, identify, authorize, dispatch, answer
gather.py      the caller's side: publish one command, gather one answer per live replica
status.py      `cmn status`: the gathering, printed as the 80-column table or JSON
quorum.py      shared health's decision: the fleet's latest verdicts, who is live, what a quorum takes out
shared_health.py  each replica's own verdicts out, its peers' in (proven), the quorum's take-outs carried out
"""
