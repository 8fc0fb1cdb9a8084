"""Settings of the example Django project: no database, no templates, no sessions."""

SECRET_KEY = "example-only-not-secret"  # an example on loopback; set your own in production
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
# Writes the matched route to the ASGI scope, where asgikit's access log reads it.
MIDDLEWARE = ["asgikit.integrations.django.RouteTemplateMiddleware"]
USE_TZ = True
