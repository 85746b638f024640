from __future__ import annotations

from django.urls import path

from usage import views as staff_views

app_name = "staff_billing"

urlpatterns = [
    path("", staff_views.staff_billing, name="dashboard"),
    path("csv/", staff_views.staff_billing_csv, name="csv"),
]
