"""The core layer: what every lesson module stands on, and nothing a lesson is about.

The layer rule, checked by tests/test_layers.py:

* ``core`` imports only the standard library and other ``core`` modules: never a lesson
  module, never plotting or widgets (matplotlib, ipywidgets, IPython), never grading.
* Lesson-facing modules (``helpers/servers.py``, ``helpers/observe/``, ``helpers/timewait.py``,
  ...) build on ``core`` and on each other; ``helpers/__init__.py`` re-exports what lessons
  use most, lazily, so ``import helpers`` stays light.

What is here, one concept per module:

* ``checks``: argument checks with one vocabulary (seconds, ports, addresses, pids):
  TypeError for the wrong kind of value, ValueError for a value out of range, both naming it.
* ``features``: what this machine can do (Linux, TCP_INFO), probed once at import.
* ``proc``: readers of /proc files (``/proc/PID/stat``, sysctls, the ephemeral port range).
* ``sockdiag``: a small NETLINK_SOCK_DIAG client, the way ``ss`` asks the kernel for sockets.
* ``registry``: the live-server registry, the course's thread-name prefix and ``stop_all()``.
* ``hygiene``: leak checks (threads, servers, sockets, child processes, public listeners).
* ``spawn``: the one way to run a child process (``python -I``, a helpers function as entry,
  a JSON handshake, stdin for life, the process group stopped as a whole).
* ``wakeup``: a selector another thread can wake (a socketpair in it), made all or nothing:
  how every background loop learns to stop.
* ``accept``: the one accept policy (drain the queue; out of descriptors, pause and retry).
* ``limits``: raising RLIMIT_NOFILE to the hard limit, for servers and load generators.
* ``lessonfiles``: where a file a lesson names (a recording under ``recorded/``) is, from any
  edition's folder.
* ``recordings``: the steps every recording shares: its label (where, when, the kernel),
  writing it as JSON, reading it back (``lessonfiles``) with one ValueError for a bad file.

This file imports nothing, so ``import helpers.core.checks`` loads only what it needs.
"""
