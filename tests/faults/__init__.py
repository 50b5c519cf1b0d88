"""The fault suite: hostile input and misbehaving backends against funnel-server."""
