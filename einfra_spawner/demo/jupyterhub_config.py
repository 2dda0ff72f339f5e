"""JupyterHub configuration of the einfra-spawner demo (``scripts/demo`` starts it).

The ``profiles/hub`` instance on http://127.0.0.1:8000, servers run by the local backend, and
demo users in the groups that unlock GPUs and extra storage. Everything the hub writes (database,
cookie secret, homes, logs) goes to one state folder. Environment variables (all optional):

* ``EINFRA_DEMO_STATE``: the state folder (default: ``demo-state/hub`` under the working folder);
* ``EINFRA_DEMO_PROFILES``: the instance folder (default: this repository's ``profiles/hub``);
* ``EINFRA_DEMO_BACKEND``: ``local`` (default), or ``kubernetes``: the Kubernetes backend against
  the fake API server of ``einfra_spawner.testing`` in process mode (a test harness, not a
  cluster: each pod runs as a local process on its own 127.0.0.N address);
* ``EINFRA_DEMO_PORT``: the port on 127.0.0.1 (default 8000);
* ``EINFRA_DEMO_HUB_PORT`` and ``EINFRA_DEMO_PROXY_API_PORT``: the loopback ports of the hub's API
  and of the proxy's API (default JupyterHub's, 8081 and 8001);
* ``EINFRA_DEMO_USAGE_DB``: the usage ledger's SQLAlchemy URL (default: ``einfra-usage.sqlite``
  in the state folder).

The end-to-end tests load this file and override only ports, paths and an API token.
"""

from __future__ import annotations

import os
from pathlib import Path

from einfra_spawner import configure
from einfra_spawner.demo.auth import DEMO_USERS, DemoAuthenticator, load_groups

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub

REPOSITORY = Path(__file__).resolve().parents[2]
state = Path(os.environ.get("EINFRA_DEMO_STATE", "demo-state/hub")).resolve()
state.mkdir(parents=True, exist_ok=True)
profiles = os.environ.get("EINFRA_DEMO_PROFILES", str(REPOSITORY / "profiles" / "hub"))
backend = os.environ.get("EINFRA_DEMO_BACKEND", "local")
port = int(os.environ.get("EINFRA_DEMO_PORT", "8000"))
url = f"http://127.0.0.1:{port}"

# The hub, its database and its proxy, all on the loopback and all state in one folder.
c.JupyterHub.bind_url = url
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
if os.environ.get("EINFRA_DEMO_HUB_PORT"):
    c.JupyterHub.hub_port = int(os.environ["EINFRA_DEMO_HUB_PORT"])
if os.environ.get("EINFRA_DEMO_PROXY_API_PORT"):
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(os.environ['EINFRA_DEMO_PROXY_API_PORT'])}"

# The spawner: profiles, backend, and the named-server limit from instance.yaml.
configure(c, profiles, backend=backend)
# The usage ledger (cost shown on the form, quotas, `einfra-spawner usage --db ...`), next to
# the hub's own database. EINFRA_DEMO_USAGE_DB: another SQLAlchemy URL, e.g. PostgreSQL.
c.EInfraSpawner.usage_db_url = (
    os.environ.get("EINFRA_DEMO_USAGE_DB") or f"sqlite:///{state / 'einfra-usage.sqlite'}"
)

if backend == "local":
    c.LocalBackend.home_root = str(state / "homes")
    # A pretend inventory, so that the form shows "N of M free" next to these GPU types (local
    # servers only count GPUs; they get no device).
    c.LocalBackend.gpu_inventory = {"a40": 2, "mig-1g.10gb": 7}
elif backend == "kubernetes":
    from einfra_spawner.demo.harness import start_harness

    c.KubernetesBackend.api_url = os.environ.get("EINFRA_DEMO_K8S_URL") or start_harness(
        state, [name for name, groups in DEMO_USERS.items() if "meta" in groups][:1]
    )
    c.KubernetesBackend.namespace = "default"
    c.KubernetesBackend.delete_grace_seconds = 1
    if os.geteuid() == 0:
        # In a real cluster the pod runs as uid 1000; the harness runs its command as a local
        # process of this (root) user, which jupyterhub-singleuser refuses without this flag.
        c.Spawner.args = ["--allow-root"]

# Users: one shared password; the demo users' groups are loaded as an SSO login would bring them.
c.JupyterHub.authenticator_class = DemoAuthenticator
c.DemoAuthenticator.demo_users = DEMO_USERS
c.DemoAuthenticator.hub_url = url
c.JupyterHub.load_groups = load_groups(DEMO_USERS)
