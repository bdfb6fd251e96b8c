"""Why a tracking server is not reached, in the words of the one line a run prints about it.

MLflow's HTTP client raises one long text for every failure ("API request to ... failed with
exception HTTPConnectionPool(...): Max retries exceeded ..."); this names the cause a person can
act on: a refused Host header (MLflow 3's DNS-rebinding guard, a server reached by an alias), a
missing login (a server started with --auth), a refused connection, a timeout.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# MLflow 3's server answers 403 with this body to a Host header missing from its --allowed-hosts
# (a guard against DNS rebinding): a client that reaches it by an alias is refused.
INVALID_HOST_REPLY = "Invalid Host header"


# Causes inside MLflow's long error text, and how the line names them.
_SHORT_CAUSES = (("Connection refused", "connection refused"), ("timed out", "no answer: timed out"),
                 ("Name or service not known", "unknown host name"),
                 ("Temporary failure in name resolution", "host name not resolved"),
                 ("No route to host", "no route to host"))


def why_not_reached(uri: str, exc: BaseException) -> str:
    """What follows "MLflow tracking at URI" in the one line that says it is not reached."""
    text = str(exc)
    if INVALID_HOST_REPLY in text:
        host = urlsplit(uri).netloc.rpartition("@")[2]  # the Host header the client sent
        return (f"refuses the Host header {host!r} (403 from MLflow's DNS-rebinding guard): start the server "
                f"with --allowed-hosts {host} (dtrain mlflow-server --allowed-hosts {host}), or reach it by a "
                "name it already allows")
    if "error code 401" in text:  # a server started with --auth, and no login on this node
        return ("requires a login (401): export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a user of "
                "that server) before `dtrain train`")
    short = next((why for cause, why in _SHORT_CAUSES if cause in text), None)
    return f"is unreachable ({short or one_line(exc)})"


def one_line(exc: BaseException) -> str:
    """`Type: message`, its first line, at most 200 characters."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
