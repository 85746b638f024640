"""Pages of the billing app, included at /billing/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from billing import credit_views, views

app_name = "billing"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    path("credit/", credit_views.credit_add, name="credit_add"),
    path(
        "credit/<uuid:payment_id>/confirmed/",
        credit_views.credit_confirmed,
        name="credit_confirmed",
    ),
    path("credit/auto-top-up/", credit_views.auto_topup, name="auto_topup"),
    path("stripe/webhook/", credit_views.stripe_webhook, name="stripe_webhook"),
]
