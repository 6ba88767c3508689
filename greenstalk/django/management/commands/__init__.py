"""Management commands of greenstalk.django: greenstalk_worker."""
