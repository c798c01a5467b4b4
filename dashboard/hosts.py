"""Which Host headers the MLflow UI answers. MLflow refuses (403) every API request whose Host is
not loopback or a private address, against DNS rebinding; so a dashboard on `--host 0.0.0.0`
would load its page on other machines and then fail every call. Off loopback, the dashboard
allows this machine's own names and addresses (on any port) besides MLflow's defaults, and
whatever `--allowed-hosts` adds (a DNS alias, a proxy's name)."""

from __future__ import annotations

import socket

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def machine_names() -> list[str]:
    """This machine's host name, FQDN and every interface's address (IPv6 in brackets, as a Host
    header has it; link-local ones left out: a browser cannot use their zone)."""
    import psutil

    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        names |= {a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)
                  and "%" not in a.address and not a.address.lower().startswith("fe80")}
    return sorted(f"[{n}]" if ":" in n else n for n in names if n)


def allowed_hosts(host: str, extra: list[str]) -> list[str] | None:
    """The `--allowed-hosts` of `mlflow server` (None: MLflow's default, enough on loopback)."""
    if host in LOOPBACK and not extra:
        return None
    from mlflow.server.security_utils import get_default_allowed_hosts

    listening = [] if host in ("0.0.0.0", "::", "") else [f"[{host}]" if ":" in host else host]
    own = [*machine_names(), *listening, *extra]
    ports = [f"{name.replace('[', '[[]', 1)}:*" for name in own if "*" not in name]  # (fnmatch: '[' escaped)
    return [*get_default_allowed_hosts(), *own, *ports]


def parse_hosts(text: str | None) -> list[str]:
    """`--allowed-hosts a,b:5000,*.lab.example`: the names, stripped; ValueError for an empty one."""
    if text is None:
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ValueError(f"--allowed-hosts '{text}' has an empty name; give names separated by commas, "
                         "e.g. --allowed-hosts gpu-box,gpu-box.lab.example")
    return names
