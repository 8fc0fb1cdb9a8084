"""The example project's URLs."""

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("", views.home),
    path("items/<str:item_id>", views.item),
    path("echo", views.echo),
    path("document", views.document),
    path("fail", views.fail),
]
