"""funnel_server."""

__all__: list[str] = []
