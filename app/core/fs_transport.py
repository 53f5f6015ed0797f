"""kombu's filesystem transport with atomic message files, no host and a prompt stop.

kombu creates a message file, then locks and writes it; a consumer listing the folder in
between opens the empty file, fails to decode it, and the Celery worker dies
("Unrecoverable error: JSONDecodeError"), which we hit in the test suite. Here a message
is written under a name the consumer ignores and renamed into place, so it appears whole.

Two more things the stock transport gets wrong for us. It claims a default hostname
("localhost") that a `filesystem://` URL never names, so kombu warns "No hostname was
supplied" each time it connects. And Celery drives a transport like this one (no event
loop of its own) with a blocking loop that asks it for messages for up to 2 s at a time and
looks at its shutdown flag only in between: an idle worker took that long to start stopping.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs) -> None:  # noqa: ANN001, ANN003
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")  # no .msg suffix: never picked up
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    # How long one wait for messages may last; Celery's loop checks for a shutdown after each.
    MAX_WAIT_S = 0.1

    @property
    def default_connection_params(self) -> dict:
        return {"port": self.default_port}  # folders, not a server: no hostname to fall back to

    def drain_events(self, connection, timeout=None):  # noqa: ANN001, ANN201
        """As kombu's, but returning (socket.timeout) after MAX_WAIT_S at most when a timeout is given."""
        if timeout is not None:
            timeout = min(timeout, self.MAX_WAIT_S)
        return super().drain_events(connection, timeout=timeout)


def install() -> None:
    """Make `filesystem://` URLs use this transport in this process."""
    TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
