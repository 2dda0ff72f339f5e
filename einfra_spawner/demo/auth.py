"""The demo's authenticator: one shared password, demo users in groups, and a login banner.

Not for production. JupyterHub's ``DummyAuthenticator`` password is deprecated since 5.3, so this
is a small :class:`~jupyterhub.authenticators.shared.SharedPasswordAuthenticator`: every name
logs in with the one password; the names in :data:`DEMO_USERS` are in groups (the demo loads
them with ``JupyterHub.load_groups``, as an SSO login would bring them), any other name is in
none. At startup it logs how to log in.
"""

from __future__ import annotations

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from traitlets import Dict, List, Unicode, default

__all__ = ["DEMO_PASSWORD", "DEMO_USERS", "DemoAuthenticator", "load_groups"]

DEMO_PASSWORD = "einfra-demo"  # noqa: S105 - the demo's published password

#: Demo users and their groups: what each one sees on the options form of ``profiles/hub``.
DEMO_USERS: dict[str, list[str]] = {
    "ada": ["gpu", "meta", "projects"],
    "grace": ["gpu"],
    "ben": ["projects"],
    "cleo": [],
}


def load_groups(users: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """``JupyterHub.load_groups`` for ``users`` (name -> groups)."""
    groups: dict[str, dict[str, list[str]]] = {}
    for name, names in users.items():
        for group in names:
            groups.setdefault(group, {"users": []})["users"].append(name)
    return groups


class DemoAuthenticator(SharedPasswordAuthenticator):  # type: ignore[misc]  # untyped
    """A shared password for everyone, and a banner at startup saying how to log in."""

    demo_users = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""The demo users and their groups, for the login banner (name -> groups).

        The groups themselves are loaded with ``JupyterHub.load_groups``. Default: none.
        """,
    ).tag(config=True)

    hub_url = Unicode(
        "http://127.0.0.1:8000",
        help="""The address users open (a URL), for the login banner. Default: port 8000.""",
    ).tag(config=True)

    @default("user_password")
    def _default_user_password(self) -> str:
        return DEMO_PASSWORD

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return True  # any name may log in: names not listed simply have no groups

    def check_allow_config(self) -> None:
        # Called once while the hub starts: the moment to say how to log in.
        super().check_allow_config()
        self.log.info("%s", self.banner())

    def banner(self) -> str:
        """How to log in, and what each demo user will see."""
        other = "any other name"
        width = max([len(other), *(len(name) for name in self.demo_users)])
        lines = [
            "",
            "=" * 72,
            f"einfra-spawner demo: open {self.hub_url} and log in with",
            f"password {self.user_password!r} and one of these user names:",
        ]
        for name, groups in self.demo_users.items():
            lines.append(f"  {name:<{width}}  groups: {', '.join(groups) if groups else '(none)'}")
        lines += [
            f"  {other:<{width}}  groups: (none)",
            "GPU types, MetaCentrum storage and project directories appear only for the",
            "groups gpu, meta and projects. Stop the hub with Ctrl-C.",
            "=" * 72,
        ]
        return "\n".join(lines)
