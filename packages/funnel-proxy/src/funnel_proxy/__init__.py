"""funnel_proxy."""

__all__: list[str] = []
