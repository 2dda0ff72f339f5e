"""The demo hub: ``scripts/demo`` runs ``jupyterhub -f einfra_spawner/demo/jupyterhub_config.py``.

The end-to-end tests load the same configuration, so the demo is tested as it is shipped.
"""
