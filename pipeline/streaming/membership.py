"""Static group membership (KIP-345) for the worker's consumer group.

Each worker joins its group with `group.instance.id` = its `[worker] instance_id`, so a worker
restarted under the same id, after SIGTERM or SIGKILL, takes its partitions back at once: the
coordinator hands it its last assignment without a rebalance, and no other worker stops. Without
it a killed worker's successor waits for the dead member's session to lapse
(`broker_session_timeout`), then for a rebalance of the whole group. The price: a worker stopped
for good keeps its partitions until its session lapses, as a killed one always did.

The assignment handed back is the one the group's leader made for the previous incarnation, with
that incarnation's web address in Faust's assignor metadata. Faust asserts that address equals
its own (`faust.assignor.PartitionAssignor.on_assignment`), and the failed assertion would leave
aiokafka's coordinator routine dead and the worker waiting for ever; an address that changed
(`web_port = 0`, or a new `web_host`/`web_port`) is only stale in the other workers' map of who
serves which device (`/sessions` forwarding) until the next rebalance, so it is logged, not fatal.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientMetadata

log = logging.getLogger("sessionize.worker")


class StaticMemberAssignor(PartitionAssignor):
    """Faust's assignor, accepting an assignment made for this member's previous address."""

    def on_assignment(self, assignment: Any) -> None:
        metadata = cast(
            ClientMetadata, ClientMetadata.loads(self._decompress(assignment.user_data))
        )
        own = str(self._url)
        if metadata.url != own:
            log.warning(
                "rejoined under the same instance id with a new web address (%s, was %s): "
                "lookups forwarded by other workers use the old one until the next rebalance",
                own,
                metadata.url,
            )
            metadata.url = own
            user_data = self._compress(metadata.dumps())
            assignment = ConsumerProtocolMemberAssignment(
                assignment.version, assignment.assignment, user_data
            )
        super().on_assignment(assignment)
