"""The landing zone as a Dagster resource: a local folder or an S3 prefix behind one interface."""

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from replay_assets.landing.backends import LandingBackend, open_landing


class ReplayStore(ConfigurableResource):
    """Where raw replays arrive (``REPLAY_LANDING_URI``); S3 is reached with the ``s3`` resource's client."""

    landing_uri: str
    s3: S3Resource

    def backend(self) -> LandingBackend:
        return open_landing(self.landing_uri, self.s3.get_client)
