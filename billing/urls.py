"""Pages of the billing app, included at /billing/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    # PLACEHOLDER (promo-low): the Stripe / pymthouse "Add credit" page replaces this view
    # under the same name and path; the low-balance notices and mail link to it.
    path("credit/", views.credit_add_placeholder, name="credit_add"),
]
