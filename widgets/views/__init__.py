"""Views by audience: api (REST /api/v1/), embed (public, customer sites), configurator (/app/)."""
