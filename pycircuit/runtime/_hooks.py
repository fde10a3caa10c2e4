"""The hook through which an upper layer follows the calls a runtime
serves, without the runtime knowing what that layer is (``spawn`` keeps a
worker alive with it until its function has been answered). Layer: runtime.

A runtime calls its observer (``Runtime.observe_calls``) in the thread
that serves the call. Every method must be quick and must not raise: the
runtime does not guard them, since they run on the path of every call.
"""

from __future__ import annotations


class CallObserver:
    """Does nothing; subclass and override what you need."""

    def call_received(self) -> None:
        """A call arrived; ``call_replied`` follows in this thread, always."""

    def call_failed(self, handle: int) -> None:
        """The call to the object at ``handle`` raised, or could not start
        (its arguments did not decode, say); its error reply follows."""

    def call_replied(self) -> None:
        """The reply to a call this thread served has left (or could not:
        the connection is lost)."""

    def handoffs(self, delta: int) -> None:
        """Replies carrying third-party references that wait for the
        receiver's acknowledgement (see the handoff rule in ``_refs``):
        ``+1`` when one is sent, ``-n`` when acknowledgements arrive or
        their receiver is lost. The sender's leases are pinned meanwhile."""


NO_OBSERVER = CallObserver()
