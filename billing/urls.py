"""Pages of the billing app, included at /billing/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from billing import credit_views, views, views_plans

app_name = "billing"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    path("plans/", views_plans.plans, name="plans"),
    path("plans/cancel/", views_plans.plan_cancel, name="plan_cancel"),
    path("plans/resume/", views_plans.plan_resume, name="plan_resume"),
    path("plans/<slug:slug>/", views_plans.plan_choose, name="plan_choose"),
    path("plans/<slug:slug>/pay/", views_plans.plan_pay, name="plan_pay"),
    path("credit/", credit_views.credit_add, name="credit_add"),
    path(
        "credit/<uuid:payment_id>/confirmed/",
        credit_views.credit_confirmed,
        name="credit_confirmed",
    ),
    path("credit/auto-top-up/", credit_views.auto_topup, name="auto_topup"),
    path("stripe/webhook/", credit_views.stripe_webhook, name="stripe_webhook"),
]
