"""Static group membership: a worker restarted under its instance id takes back its assignment."""

from __future__ import annotations

import zlib

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from pipeline.config import Config, WorkerSettings
from pipeline.streaming.app import create_app
from pipeline.streaming.membership import StaticMemberAssignor


def handed_back(url: str, partitions: list[int]) -> ConsumerProtocolMemberAssignment:
    """The assignment the coordinator hands a static member back: made for `url`."""
    assignment = ClientAssignment(actives={"raw": partitions}, standbys={})
    metadata = ClientMetadata(assignment=assignment, url=url, changelog_distribution={url: {}})
    return ConsumerProtocolMemberAssignment(
        4, [("raw", partitions)], zlib.compress(metadata.dumps())
    )


@pytest.fixture
def app(tmp_path: object) -> object:
    config = Config(worker=WorkerSettings(instance_id="blue", data_dir=str(tmp_path)))
    app, _ = create_app(config, partitions=4, web_url="http://127.0.0.1:7001")
    return app


def test_the_worker_joins_its_group_under_its_instance_id(app: object) -> None:
    assert app.conf.consumer_group_instance_id == "blue"  # type: ignore[attr-defined]
    assert isinstance(app.assignor, StaticMemberAssignor)  # type: ignore[attr-defined]


def test_an_assignment_made_for_an_earlier_web_address_is_taken(app: object) -> None:
    # A worker restarted with web_port = 0 (or a new address) gets back the assignment made
    # for its previous incarnation; Faust's own assignor fails an assertion on it, which left
    # the worker waiting for ever.
    with pytest.raises(AssertionError):
        PartitionAssignor(app, replicas=0).on_assignment(handed_back("http://127.0.0.1:6999", [0]))
    assignor = app.assignor  # type: ignore[attr-defined]
    assignor.on_assignment(handed_back("http://127.0.0.1:6999", [0, 2]))
    assert assignor.assigned_actives() == {("raw", 0), ("raw", 2)}
    assert assignor._assignment.actives == {"raw": [0, 2]}


def test_an_assignment_for_the_same_address_is_taken_as_faust_takes_it(app: object) -> None:
    assignor = app.assignor  # type: ignore[attr-defined]
    assignor.on_assignment(handed_back("http://127.0.0.1:7001", [1]))
    assert assignor.assigned_actives() == {("raw", 1)}


def test_without_static_membership_the_worker_joins_as_a_new_member(tmp_path: object) -> None:
    settings = WorkerSettings(instance_id="blue", data_dir=str(tmp_path), static_membership=False)
    app, _ = create_app(Config(worker=settings), partitions=4)
    assert app.conf.consumer_group_instance_id is None
