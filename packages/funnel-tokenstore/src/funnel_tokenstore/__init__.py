"""funnel_tokenstore."""

__all__: list[str] = []
