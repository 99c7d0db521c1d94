"""A pytest plugin for the nbval runs (``-p nbval_unix_sockets``): nbval's kernels talk over Unix sockets,
as the runner's do, since under pytest-xdist two kernels starting at once could otherwise race for one TCP
port and one would die with ``ZMQError: Address already in use``."""

import nbval.kernel

from labkit.runner import kernel_manager_class

nbval.kernel.KernelManager = kernel_manager_class(nbval.kernel.KernelManager) or nbval.kernel.KernelManager
