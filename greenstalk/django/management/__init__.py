"""Management commands of greenstalk.django."""
