"""greenstalk.django with a real Django project (Django 6, Python 3.12+)."""
