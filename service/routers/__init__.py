"""The HTTP routes, one router per resource (FastAPI's "bigger applications" layout): each
reads what it needs from the app's state through service/dependencies.py and hands the work to
a use-case object."""
