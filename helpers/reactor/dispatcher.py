"""The dispatcher: ask the kernel which channels are ready, with epoll or poll.

Theory of operation. A dispatcher (yolanda's ``event_dispatcher``) wraps one readiness
API behind four calls: ``add``, ``modify``, ``remove`` a channel, and ``poll(timeout_s)``,
which blocks until at least one fd is ready (or the timeout passes) and returns
``(fd, revents)`` pairs.

* ``EpollDispatcher`` keeps the interest set in the kernel (``epoll_ctl``), so one wait
  costs the number of *ready* fds, not the number watched (lesson 16). Level-triggered,
  as asyncio and yolanda use it: a channel that leaves bytes unread is reported again.
* ``PollDispatcher`` hands the whole fd list to the kernel on every wait: simpler, and
  the same readiness rules, at a cost that grows with the number of fds (``man 2 poll``).

The platform decision is made once, here: ``DEFAULT_BACKEND`` is epoll where the
select module has it (Linux), else poll.
"""

from __future__ import annotations

import select

from .channel import Channel

__all__ = ["Dispatcher", "EpollDispatcher", "PollDispatcher", "BACKENDS", "DEFAULT_BACKEND", "make_dispatcher"]


class Dispatcher:
    """The common part: the fd -> channel map. Subclasses talk to the kernel."""

    name = "?"

    def __init__(self) -> None:
        self.channels: dict[int, Channel] = {}

    def add(self, channel: Channel) -> None:
        """Start watching `channel.fd` for `channel.events`."""
        if channel.fd in self.channels:
            raise ValueError(f"fd {channel.fd} is already watched by {self.channels[channel.fd]!r}")
        self.channels[channel.fd] = channel
        channel.registered = True

    def modify(self, channel: Channel) -> None:
        """The channel's interest set changed."""

    def remove(self, channel: Channel) -> None:
        """Stop watching the channel (call before closing its fd)."""
        self.channels.pop(channel.fd, None)
        channel.registered = False

    def poll(self, timeout_s: float | None) -> list[tuple[int, int]]:
        """Wait up to `timeout_s` (None: forever) and return (fd, revents) for the ready fds.

        The loop finds each fd's channel in ``channels``; an fd missing there was removed by
        an earlier callback of the same batch and is skipped.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the kernel object, if any."""
        self.channels.clear()


class EpollDispatcher(Dispatcher):
    """epoll(7): the interest list lives in the kernel."""

    name = "epoll"

    def __init__(self) -> None:
        super().__init__()
        self._epoll = select.epoll()

    def add(self, channel: Channel) -> None:
        super().add(channel)
        self._epoll.register(channel.fd, channel.events)

    def modify(self, channel: Channel) -> None:
        self._epoll.modify(channel.fd, channel.events)

    def remove(self, channel: Channel) -> None:
        if self.channels.pop(channel.fd, None) is not None:
            self._epoll.unregister(channel.fd)
        channel.registered = False

    def poll(self, timeout_s: float | None) -> list[tuple[int, int]]:
        return self._epoll.poll(-1 if timeout_s is None else timeout_s)

    def close(self) -> None:
        super().close()
        self._epoll.close()


class PollDispatcher(Dispatcher):
    """poll(2): the whole fd list is passed to the kernel on every wait."""

    name = "poll"

    def __init__(self) -> None:
        super().__init__()
        self._poll = select.poll()

    def add(self, channel: Channel) -> None:
        super().add(channel)
        self._poll.register(channel.fd, channel.events)

    def modify(self, channel: Channel) -> None:
        self._poll.modify(channel.fd, channel.events)

    def remove(self, channel: Channel) -> None:
        if self.channels.pop(channel.fd, None) is not None:
            self._poll.unregister(channel.fd)
        channel.registered = False

    def poll(self, timeout_s: float | None) -> list[tuple[int, int]]:
        return self._poll.poll(None if timeout_s is None else timeout_s * 1000.0)  # poll() takes ms


BACKENDS: dict[str, type[Dispatcher]] = {"poll": PollDispatcher}
if hasattr(select, "epoll"):
    BACKENDS["epoll"] = EpollDispatcher
DEFAULT_BACKEND = "epoll" if "epoll" in BACKENDS else "poll"


def make_dispatcher(backend: str = DEFAULT_BACKEND) -> Dispatcher:
    """A new dispatcher: 'epoll' (Linux) or 'poll'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]()
