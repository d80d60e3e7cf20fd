"""URLs of the Django project the host tests mount StarModel in (``ROOT_URLCONF``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("host home")


urlpatterns = [path("", home)]
