"""A minimal Django project (no database) behind asgikit's middleware: see asgi.py."""
