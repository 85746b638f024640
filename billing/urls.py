"""Pages of the billing app, included at /billing/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from billing import views, views_merchant

app_name = "billing"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    # "Add credit": dispatched on BILLING_MODE (views.credit_add).
    path("credit/", views.credit_add, name="credit_add"),
    # Merchant mode (views_merchant): pymthouse checkout, plans, invoices, cards.
    path("credit/<uuid:top_up_id>/return/", views_merchant.credit_return, name="credit_return"),
    path("credit/<uuid:top_up_id>/status", views_merchant.credit_status, name="credit_status"),
    path(
        "credit/<uuid:top_up_id>/cancelled/",
        views_merchant.credit_cancelled,
        name="credit_cancelled",
    ),
    path("plans/", views_merchant.plans, name="plans"),
    path("plans/change/", views_merchant.plan_change_view, name="plan_change"),
    path("plans/return/", views_merchant.plan_return, name="plan_return"),
    path("plans/cancel/", views_merchant.plan_cancel_view, name="plan_cancel"),
    path("plans/resume/", views_merchant.plan_resume_view, name="plan_resume"),
    path("invoices/", views_merchant.invoices, name="invoices"),
    path("invoices/<str:invoice_id>/", views_merchant.invoice_link, name="invoice_link"),
    path("cards/", views_merchant.cards, name="cards"),
]
