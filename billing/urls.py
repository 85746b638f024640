"""Pages of the billing app, included at /billing/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from billing import views, views_merchant

app_name = "billing"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    # "Add credit" and the plan pages are dispatched on BILLING_MODE (billing/views.py):
    # owner_rollup pages in views_plans (and the Stripe provider), merchant mode's in
    # views_merchant (pymthouse checkout).
    path("credit/", views.credit_add, name="credit_add"),
    path("plans/", views.plans, name="plans"),
    path("plans/cancel/", views.plan_cancel, name="plan_cancel"),
    path("plans/resume/", views.plan_resume, name="plan_resume"),
    # Merchant mode only (views_merchant): pymthouse checkout, plans, invoices, cards.
    path("credit/<uuid:top_up_id>/return/", views_merchant.credit_return, name="credit_return"),
    path("credit/<uuid:top_up_id>/status", views_merchant.credit_status, name="credit_status"),
    path(
        "credit/<uuid:top_up_id>/cancelled/",
        views_merchant.credit_cancelled,
        name="credit_cancelled",
    ),
    path("plans/merchant/change/", views_merchant.plan_change_view, name="merchant_plan_change"),
    path("plans/merchant/return/", views_merchant.plan_return, name="merchant_plan_return"),
    path("invoices/", views_merchant.invoices, name="invoices"),
    path("invoices/<str:invoice_id>/", views_merchant.invoice_link, name="invoice_link"),
    path("cards/", views_merchant.cards, name="cards"),
    # owner_rollup only (404 in merchant mode, where pymthouse sells the plans).
    path("plans/<slug:slug>/", views.plan_choose, name="plan_choose"),
    path("plans/<slug:slug>/pay/", views.plan_pay, name="plan_pay"),
]
