"""The registry's names without importing torch, for the CLI's ``--network`` choices.

``clickmask.export.networks.NETWORKS`` is the registry itself; a unit test keeps the two equal.
"""

NETWORK_NAMES: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite2", "ritm-hrnet18s", "ritm-hrnet18", "ritm-hrnet32")
